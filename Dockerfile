# Faultline: one small image holding the `faultline` binary. Every service runs from it as
# `faultline serve <gateway|orders|fulfillment>`, and the load generator as `faultline load`
# (see docker-compose.yml).
#
# Stages:
#   chef     the pinned Rust toolchain plus a pinned cargo-chef;
#   planner  `cargo chef prepare`: a recipe of the workspace's manifests and Cargo.lock only;
#   builder  `cargo chef cook` builds the dependencies alone, in a layer that stays cached
#            until Cargo.toml/Cargo.lock change; then the workspace itself is built;
#   runtime  Debian slim with ca-certificates and curl (the compose healthchecks probe each
#            service's admin `/readyz` with it), a non-root user and the binary. No toolchain.
#
# Build: docker build -t faultline:local .   (docker compose build does the same)

FROM rust:1.95.0-slim-bookworm AS chef
# cargo-chef is pinned: its recipe format can change between versions.
RUN cargo install cargo-chef --version 0.1.77 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies of the faultline package only (not the test crates' dev-dependencies).
RUN cargo chef cook --release --locked --package faultline --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --package faultline --bin faultline \
    && install -D -m 0755 target/release/faultline /out/faultline

FROM debian:bookworm-20260803-slim AS runtime
# Package versions come from the pinned, dated base image's bookworm snapshot.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 faultline \
    && useradd --system --uid 10001 --gid faultline --create-home \
        --home-dir /var/lib/faultline --shell /usr/sbin/nologin faultline
COPY --from=builder /out/faultline /usr/local/bin/faultline
# Numeric, so runtimes can tell it is not root without reading /etc/passwd.
USER 10001:10001
# Writable for `faultline up` (SQLite files under .faultline/); compose uses PostgreSQL/NATS.
WORKDIR /var/lib/faultline
# App listeners 8080-8082, admin listeners (/metrics, /healthz, /readyz, /admin) 9080-9082.
EXPOSE 8080 8081 8082 9080 9081 9082
ENTRYPOINT ["faultline"]
CMD ["--help"]
