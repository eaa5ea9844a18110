# syntax=docker/dockerfile:1
# heaptap's image: the sidecar (`heaptap agent`, the default command) and the preload at
# /opt/heaptap/lib/libheaptap.so (glibc) and libheaptap-musl.so (musl), which an init
# container copies into a volume the application container preloads from (`heaptap-init
# DIR`; see docs/kubernetes.md).
#
# The build steps are scripts/image-build.sh, which CI also runs without a Docker engine and
# test/deploy/image.test.ts checks the tree it makes; this file adds only the base images,
# the Debian packages and the user.
#
#   docker build -t heaptap:0.1.0 .
#
# The base images are build arguments, the official Node.js images by default; the image
# test (test/deploy/pod.test.ts) builds on local stand-ins made from Debian's packages
# (scripts/peers/image-bases.sh), with the legacy builder:
#   DOCKER_BUILDKIT=0 docker build --network host \
#     --build-arg BUILD_IMAGE=heaptap-standin/node:24-bookworm \
#     --build-arg RUNTIME_IMAGE=heaptap-standin/node:24-bookworm-slim -t heaptap:0.1.0 .

ARG NODE_MAJOR=24
# Debian 12 with Node.js, a C toolchain (buildpack-deps) and npm.
ARG BUILD_IMAGE=node:${NODE_MAJOR}-bookworm
# Debian 12 slim with Node.js: the image the agent runs in.
ARG RUNTIME_IMAGE=node:${NODE_MAJOR}-bookworm-slim

FROM ${BUILD_IMAGE} AS build
# The C toolchain comes with the image (buildpack-deps); the addon links elfutils and zlib;
# musl-tools (musl-gcc) builds libheaptap-musl.so.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libdw-dev libelf-dev zlib1g-dev libdeflate-dev libiberty-dev musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY . .
RUN scripts/image-build.sh /image-root

FROM ${RUNTIME_IMAGE}
# What the addon (src/addon/build/heaptap.node) needs at run time beyond the base image's
# libc6, libstdc++6 and libgcc-s1; test/deploy/image.test.ts checks this list against the
# addon's NEEDED entries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libdw1 libelf1 zlib1g libdeflate0 \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, numeric in USER so that the kubelet can verify runAsNonRoot; the
# manifests in deploy/ run the application container with the same ids.
RUN groupadd --gid 10001 heaptap \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin heaptap
COPY --from=build /image-root/ /
ENV PATH=/opt/heaptap/bin:$PATH \
    NODE_ENV=production
USER 10001:10001
EXPOSE 6060
ENTRYPOINT ["/opt/heaptap/bin/heaptap"]
CMD ["agent"]
