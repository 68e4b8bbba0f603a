# The fuzz harnesses (included from CMakeLists.txt when FUZZ=ON): one
# executable per spec/fuzz/fuzz_*.c, all built by the target `fuzz`.
# -fsanitize=fuzzer links libFuzzer's main; under afl-clang-fast the same
# flag links AFL++'s libAFLDriver instead.
file(GLOB FUZZ_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/fuzz/fuzz_*.c)
set(FUZZ_TARGETS "")
foreach(src IN LISTS FUZZ_SOURCES)
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE dittofs_core ${LUA_STATIC} dl)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  list(APPEND FUZZ_TARGETS ${name})
endforeach()
add_custom_target(fuzz DEPENDS ${FUZZ_TARGETS})
