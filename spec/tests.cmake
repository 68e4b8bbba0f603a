# Test registry (included from CMakeLists.txt). Everything runs under ctest:
#   unit         C tests (spec/c/test_*.c) and busted specs (spec/lua/*_spec.lua)
#   integration  tests against the local control plane (deploy/local/cluster.sh),
#                C programs spec/c/itest_*.c and scripts spec/integration/*.sh
find_program(LUA54 lua5.4 REQUIRED)  # used by spec/busted
find_program(BUSTED busted PATHS /usr/bin REQUIRED)

file(GLOB C_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/c/test_*.c)
foreach(src IN LISTS C_TESTS)
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE dittofs_core ${LUA_STATIC} dl)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/spec/c)
  add_test(NAME c_${name} COMMAND ${name}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(c_${name} PROPERTIES LABELS unit TIMEOUT 300)
endforeach()
# test_sandbox again with sandbox_end's byte compare off: the C API check
# alone must find every change too.
add_test(NAME c_test_sandbox_api COMMAND test_sandbox
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(c_test_sandbox_api PROPERTIES LABELS unit TIMEOUT 300
                     ENVIRONMENT "DITTOFS_LUA_RAW=0")

file(GLOB LUA_SPECS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/lua/*_spec.lua)
foreach(spec IN LISTS LUA_SPECS)
  get_filename_component(name ${spec} NAME_WE)
  add_test(NAME lua_${name}
           COMMAND ${CMAKE_SOURCE_DIR}/spec/busted --output=TAP ${spec}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(lua_${name} PROPERTIES LABELS unit TIMEOUT 300
    ENVIRONMENT "DITTOFS_OPERATOR=$<TARGET_FILE:dittofs-operator>;DITTOFS_BUILD_DIR=${CMAKE_BINARY_DIR}")
endforeach()

add_test(NAME lint COMMAND ${CMAKE_SOURCE_DIR}/spec/lint.sh)
find_program(VALGRIND valgrind)
if(VALGRIND AND NOT SANITIZE)
  add_test(NAME memcheck
           COMMAND ${CMAKE_SOURCE_DIR}/spec/memcheck.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(memcheck PROPERTIES LABELS "unit;memcheck"
                       TIMEOUT 1800)
endif()
set_tests_properties(lint PROPERTIES LABELS unit TIMEOUT 300)
# The install bundle: deploy/install.yaml up to date, and the Deployment,
# RBAC and Namespace as the README promises (kubectl kustomize, no cluster).
add_test(NAME bundle_check COMMAND ${CMAKE_SOURCE_DIR}/spec/bundle_check.sh)
set_tests_properties(bundle_check PROPERTIES LABELS unit TIMEOUT 120
  ENVIRONMENT "DITTOFS_OPERATOR=$<TARGET_FILE:dittofs-operator>")
# The CRD's CEL rules against validate(): each bad DittoServer of spec/cel
# gets through --script-test exactly the message of its CRD rule.
add_test(NAME cel_check COMMAND ${CMAKE_SOURCE_DIR}/spec/cel_check.sh)
set_tests_properties(cel_check PROPERTIES LABELS unit TIMEOUT 120
  ENVIRONMENT "DITTOFS_OPERATOR=$<TARGET_FILE:dittofs-operator>")
# Run mode started on policies that cannot be loaded, against a closed
# port (no cluster): waiting alive and not ready, then started by a valid set.
add_test(NAME policy_start_check COMMAND ${CMAKE_SOURCE_DIR}/spec/policy_start_check.sh)
set_tests_properties(policy_start_check PROPERTIES LABELS unit TIMEOUT 120
  ENVIRONMENT "DITTOFS_OPERATOR=$<TARGET_FILE:dittofs-operator>")

# Fuzz smoke (spec/fuzz.sh --smoke): the harnesses of spec/fuzz built with
# clang (ASan+UBSan, libFuzzer) in their own directory, each replaying its
# seeds and spec/fuzz/regressions, then fuzzing 4 s; fails on any crash.
# Needs clang and libclang-rt-14-dev (deploy/local/deps.sh). One fuzz
# build per build tree, outside the repository (~/.cache).
if(NOT FUZZ)
  string(MD5 fuzz_key "${CMAKE_BINARY_DIR}")
  string(SUBSTRING "${fuzz_key}" 0 12 fuzz_key)
  add_test(NAME fuzz_smoke COMMAND ${CMAKE_SOURCE_DIR}/spec/fuzz.sh --smoke)
  set_tests_properties(fuzz_smoke PROPERTIES LABELS "unit;fuzz" TIMEOUT 600
    ENVIRONMENT "FUZZ_BUILD_DIR=$ENV{HOME}/.cache/dittofs-operator/fuzz-smoke-${fuzz_key}")
endif()

# The container image (Dockerfile) as a pod runs it; needs the Docker Engine
# (and, cold, the Debian archive: ~10 min to build the base and the image).
add_test(NAME image_check COMMAND ${CMAKE_SOURCE_DIR}/spec/image_check.sh)
set_tests_properties(image_check PROPERTIES LABELS "unit;image" TIMEOUT 1800
  ENVIRONMENT "DITTOFS_OPERATOR=$<TARGET_FILE:dittofs-operator>")

if(INTEGRATION_TESTS)
  # The integration tests run once per Kubernetes version in KUBE_VERSIONS
  # (deploy/local/cluster.sh: "current" is the newest release we build, 1.20
  # the oldest we support). Per version one test ground: control plane + node,
  # started by the setup fixture (cluster_up@V), stopped by the cleanup fixture
  # (cluster_down@V), shared by every test of that version; the versions run
  # one after the other (each cluster_up waits for the previous cluster_down).
  set(KUBE_VERSIONS "current;1.20" CACHE STRING
      "Kubernetes versions the integration tests run on (cluster.sh DITTOFS_KUBE_VERSION)")
  option(FAULTS_FULL "Also run spec/integration/faults_test.sh at the issue's sizes (faults_full@V)" OFF)
  set(ITEST_ENV
    "DITTOFS_OPERATOR=$<TARGET_FILE:dittofs-operator>"
    "DITTOFS_BUILD_DIR=${CMAKE_BINARY_DIR}"
    "DITTOFS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")

  file(GLOB C_ITESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/c/itest_*.c)
  foreach(src IN LISTS C_ITESTS)
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    target_link_libraries(${name} PRIVATE dittofs_core ${LUA_STATIC} dl)
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/spec/c)
  endforeach()
  file(GLOB SH_ITESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/spec/integration/*_test.sh)

  set(previous_down "")
  foreach(ver IN LISTS KUBE_VERSIONS)
    set(venv "DITTOFS_KUBE_VERSION=${ver}")
    add_test(NAME cluster_up@${ver}
             COMMAND ${CMAKE_SOURCE_DIR}/deploy/local/cluster.sh start)
    add_test(NAME cluster_down@${ver}
             COMMAND ${CMAKE_SOURCE_DIR}/deploy/local/cluster.sh stop)
    # cold: the Kubernetes build, the images and the provisioner (tens of minutes)
    set_tests_properties(cluster_up@${ver} PROPERTIES FIXTURES_SETUP cluster@${ver}
                         LABELS "integration;k${ver}" TIMEOUT 5400
                         ENVIRONMENT "${venv}")
    set_tests_properties(cluster_down@${ver} PROPERTIES
                         FIXTURES_CLEANUP cluster@${ver}
                         LABELS "integration;k${ver}" ENVIRONMENT "${venv}")
    if(previous_down)
      set_tests_properties(cluster_up@${ver} PROPERTIES DEPENDS ${previous_down})
    endif()
    set(previous_down cluster_down@${ver})

    foreach(src IN LISTS C_ITESTS)
      get_filename_component(name ${src} NAME_WE)
      add_test(NAME ${name}@${ver}
               COMMAND ${CMAKE_SOURCE_DIR}/spec/integration/with-cluster
                       $<TARGET_FILE:${name}>
               WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
      set_tests_properties(${name}@${ver} PROPERTIES FIXTURES_REQUIRED cluster@${ver}
        LABELS "integration;k${ver}" TIMEOUT 900 RUN_SERIAL TRUE
        ENVIRONMENT "${ITEST_ENV};${venv}")
    endforeach()
    foreach(script IN LISTS SH_ITESTS)
      get_filename_component(name ${script} NAME_WE)
      add_test(NAME ${name}@${ver}
               COMMAND ${CMAKE_SOURCE_DIR}/spec/integration/with-cluster ${script}
               WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
      set_tests_properties(${name}@${ver} PROPERTIES FIXTURES_REQUIRED cluster@${ver}
        LABELS "integration;k${ver}" TIMEOUT 900 RUN_SERIAL TRUE
        ENVIRONMENT "${ITEST_ENV};${venv}")
    endforeach()
    # The fault tests (spec/integration/faults_test.sh, Toxiproxy): the
    # bounded run above (about 8 min) also under label "faults"; with
    # -DFAULTS_FULL=ON also the issue's sizes and every scenario (200
    # DittoServers, 10 apiserver restarts, 50 kills, the 85 s stall and
    # the silently dead connections, which need root for iptables: 25 min
    # on 2 busy cores), label "faults_full".
    set_property(TEST faults_test@${ver} APPEND PROPERTY LABELS faults)
    if(FAULTS_FULL)
      add_test(NAME faults_full@${ver}
               COMMAND ${CMAKE_SOURCE_DIR}/spec/integration/with-cluster
                       ${CMAKE_SOURCE_DIR}/spec/integration/faults_test.sh
               WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
      set_tests_properties(faults_full@${ver} PROPERTIES FIXTURES_REQUIRED cluster@${ver}
        LABELS "integration;k${ver};faults_full" TIMEOUT 3600 RUN_SERIAL TRUE
        ENVIRONMENT "${ITEST_ENV};${venv};DITTOFS_FAULTS_FULL=1")
    endif()
  endforeach()
endif()
