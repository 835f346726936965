# syntax=docker/dockerfile:1
# One image, both binaries. The entrypoint is the data plane (`aerugo-dataplane serve`, as a
# Registry's Deployment runs it with `args: [serve]`); the chart runs the operator with
# `command: [aerugo-operator]`. Migrations are compiled into both binaries.
#
#   docker build -t aerugo/aerugo:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p aerugo-dataplane -p aerugo-operator \
 && install -D -m 0755 -t /out target/release/aerugo-dataplane target/release/aerugo-operator

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# The chart's pods run as this user with a read-only root filesystem.
USER 65532:65532
EXPOSE 5000 8081 9090
ENTRYPOINT ["aerugo-dataplane"]
CMD ["serve"]
