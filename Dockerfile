# syntax=docker/dockerfile:1
# One image, both binaries. The entrypoint is the data plane (`aerugo-dataplane serve`, as a
# Registry's Deployment runs it with `args: [serve]`); the chart runs the operator with
# `command: [aerugo-operator]`. Migrations are compiled into both binaries.
#
#   docker build -t aerugo/aerugo:dev .
#
# Without a Docker engine, `./scripts/dev.sh image` builds the same image with buildah from
# this file's runtime stage (everything from `FROM scratch` on), with the build stage's
# rootfs made on the host by the same script; no base image is pulled.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p aerugo-dataplane -p aerugo-operator \
 && scripts/image-rootfs.sh /rootfs target/release/aerugo-dataplane target/release/aerugo-operator

# The runtime stage: the binaries, the shared libraries they load, CA certificates, a passwd
# entry for 65532 and /tmp; no shell, no package manager.
FROM scratch
COPY --from=build /rootfs/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PATH=/usr/local/bin
# The chart's pods run as this user with a read-only root filesystem and no capabilities.
USER 65532:65532
# 5000: the registry (AERUGO_LISTEN); 9090: a Registry's admin port (/metrics, /readyz);
# 8081: the operator's (AERUGO_OPERATOR_ADMIN_LISTEN in the chart).
EXPOSE 5000 8081 9090
ENTRYPOINT ["aerugo-dataplane"]
CMD ["serve"]
