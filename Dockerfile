# dittofs-operator image: one static binary on an empty (scratch) image, run
# as 65532. The default policies, the support library and the CRD are
# embedded in the binary; custom policies are mounted with --policies.
#
#   docker build -t dittofs-operator .
#
# Nothing is pulled: the build stage is BASE_IMAGE, a Debian bookworm with
# apt and the Debian archive in its sources (default: the image that
# deploy/local/images.sh makes with mmdebstrap); it needs the archive over
# the network (binary packages and the source packages of curl,
# libmicrohttpd and cjson), the runtime stage nothing.
#
# Why static, and these libraries: Debian's libcurl maps RTMP, LDAP, SSH,
# GSSAPI, IDN, PSL and HTTP/2 libraries, and libmicrohttpd GnuTLS, none of
# which the operator uses (HTTP/1.1 over OpenSSL to the API server; plain
# HTTP for /metrics and the probes). Built here from Debian's own sources
# (its security patches applied) with only that, linked statically with
# OpenSSL, libyaml, Lua and glibc, unreferenced code dropped: no shared
# library, no loader, ~6 MB of binary, a few MiB resident (README, "The
# image"). The source layers are cached: only the last build step reruns
# when the operator's sources change.
ARG BASE_IMAGE=dittofs-local/debian:bookworm

FROM ${BASE_IMAGE} AS deps
# deb-src next to every deb source (one-line and deb822 formats)
RUN set -eu; cd /etc/apt; \
    for f in sources.list sources.list.d/*.list; do \
      if [ -f "$f" ]; then sed -i -n -e p -e 's/^\([[:space:]]*\)deb\([[:space:]]\)/\1deb-src\2/p' "$f"; fi; \
    done; \
    for f in sources.list.d/*.sources; do \
      if [ -f "$f" ]; then sed -i 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb deb-src/' "$f"; fi; \
    done; \
    apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential cmake pkg-config liblua5.4-dev libyaml-dev libssl-dev \
      >/dev/null \
 && rm -rf /var/cache/apt/archives/*.deb
WORKDIR /deps
# Debian's source packages, its patches applied (curl's last two, the
# GnuTLS and NSS flavours, reverted as debian/rules does for OpenSSL)
RUN apt-get source -qq curl libmicrohttpd cjson \
 && cd curl-*/ \
 && patch -R -p1 -s < debian/patches/99_nss.patch \
 && patch -R -p1 -s < debian/patches/90_gnutls.patch
ENV CFLAGS="-O2 -ffunction-sections -fdata-sections"
# libcurl: HTTP and HTTPS over OpenSSL, HTTP/1.1, nothing else
RUN cmake -S curl-*/ -B curl-build -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX=/opt/deps -DCMAKE_INSTALL_LIBDIR=lib \
      -DBUILD_SHARED_LIBS=OFF -DBUILD_CURL_EXE=OFF -DBUILD_TESTING=OFF \
      -DENABLE_MANUAL=OFF -DCURL_USE_OPENSSL=ON -DHTTP_ONLY=ON \
      -DCURL_DISABLE_ALTSVC=ON -DCURL_DISABLE_COOKIES=ON \
      -DCURL_DISABLE_CRYPTO_AUTH=ON -DCURL_DISABLE_DOH=ON \
      -DCURL_DISABLE_GETOPTIONS=ON -DCURL_DISABLE_HSTS=ON \
      -DCURL_DISABLE_LIBCURL_OPTION=ON -DCURL_DISABLE_MIME=ON \
      -DCURL_DISABLE_NETRC=ON -DCURL_DISABLE_NTLM=ON \
      -DCURL_DISABLE_PROGRESS_METER=ON \
      -DCURL_DISABLE_OPENSSL_AUTO_LOAD_CONFIG=ON \
      -DUSE_NGHTTP2=OFF -DUSE_LIBIDN2=OFF -DCURL_USE_LIBPSL=OFF \
      -DCURL_USE_LIBSSH2=OFF -DCURL_USE_LIBSSH=OFF -DCURL_USE_GSSAPI=OFF \
      -DCURL_ZLIB=OFF -DCURL_BROTLI=OFF -DCURL_ZSTD=OFF \
      -DENABLE_THREADED_RESOLVER=ON \
      -DCURL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt -DCURL_CA_PATH=none \
      >/dev/null \
 && cmake --build curl-build -j"$(nproc)" >/dev/null \
 && cmake --install curl-build >/dev/null \
 && rm -rf curl-build
# libmicrohttpd: no HTTPS (no GnuTLS), no auth, no post processor
RUN cd libmicrohttpd-*/ \
 && ./configure -q --prefix=/opt/deps --libdir=/opt/deps/lib \
      --disable-shared --enable-static --disable-https --without-gnutls \
      --disable-doc --disable-examples --disable-curl --disable-postprocessor \
      --disable-bauth --disable-dauth --disable-httpupgrade --disable-nls \
      --enable-epoll=yes >/dev/null \
 && make -s -j"$(nproc)" -C src/microhttpd >/dev/null \
 && make -s -C src/microhttpd install >/dev/null \
 && make -s -C src/include install >/dev/null \
 && make -s install-pkgconfigDATA >/dev/null
# cJSON
RUN cmake -S cjson-*/ -B cjson-build -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX=/opt/deps -DCMAKE_INSTALL_LIBDIR=lib \
      -DBUILD_SHARED_LIBS=OFF -DENABLE_CJSON_TEST=OFF -DENABLE_CJSON_UTILS=OFF \
      -DENABLE_CUSTOM_COMPILER_FLAGS=OFF >/dev/null \
 && cmake --build cjson-build >/dev/null \
 && cmake --install cjson-build >/dev/null \
 && rm -rf cjson-build
# the runtime's only files besides the binary: the user and its group
RUN mkdir -p /rootfs/etc \
 && echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' >/rootfs/etc/passwd \
 && echo 'nonroot:x:65532:' >/rootfs/etc/group

FROM deps AS build
ENV PKG_CONFIG_PATH=/opt/deps/lib/pkgconfig CFLAGS=
WORKDIR /src
COPY CMakeLists.txt ./
COPY core core
COPY lua lua
COPY policies policies
COPY crd crd
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DWERROR=ON \
      -DINTEGRATION_TESTS=OFF -DSTATIC=ON >/dev/null \
 && cmake --build /build -j"$(nproc)" --target dittofs-operator \
 && strip /build/dittofs-operator \
 && /build/dittofs-operator --version

FROM scratch
COPY --from=deps /rootfs/ /
COPY --from=build /build/dittofs-operator /usr/local/bin/dittofs-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dittofs-operator"]
