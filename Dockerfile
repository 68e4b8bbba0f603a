# dittofs-operator image: build on Debian bookworm, run on bookworm-slim as
# a non-root user. The default policies, the support library and the CRD are
# embedded in the binary; custom policies are mounted with --policies.
#
# Both bases can be overridden (a Debian bookworm with apt; nothing else is
# assumed): deploy/local/images.sh, which cannot pull, passes
#   --build-arg BASE_IMAGE=dittofs-local/debian:bookworm
#   --build-arg RUNTIME_IMAGE=dittofs-local/debian:bookworm
ARG BASE_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config liblua5.4-dev libcjson-dev \
      libyaml-dev libcurl4-openssl-dev libssl-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY core core
COPY lua lua
COPY policies policies
COPY crd crd
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DWERROR=ON \
      -DINTEGRATION_TESTS=OFF -DBUILD_TESTING=OFF \
 && cmake --build /build -j"$(nproc)" --target dittofs-operator \
 && strip /build/dittofs-operator

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libcjson1 libyaml-0-2 libcurl4 libssl3 libmicrohttpd12 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/dittofs-operator /usr/local/bin/dittofs-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dittofs-operator"]
