# floodgate's container image.
#
#   docker build -t floodgate:latest .
#   docker run --rm -p 8080:8080 -p 8081:8081 floodgate:latest
#
# Build stage: the release binary. No system protoc is needed: build.rs uses
# the protoc vendored by the protoc-bin-vendored crate. config/ is compiled
# into the binary too (the rules served when nothing else is configured).
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY config config
COPY src src
# Cargo.toml declares the benchmark target, so its file must exist.
COPY benches benches
RUN cargo build --release --locked --bin floodgate

# Run stage: a small Debian with the binary, running as a non-root user:
# 65534 (nobody), the UID Envoy Gateway's rate-limit Deployment runs as,
# on a read-only root filesystem (floodgate writes no files).
FROM debian:bookworm-slim
COPY --from=build /src/target/release/floodgate /usr/local/bin/floodgate
# The reference image's entry point: Istio's sample Deployment and Envoy
# Gateway's rate-limit Deployment run `/bin/ratelimit` without arguments,
# which floodgate answers by serving.
RUN ln -s /usr/local/bin/floodgate /bin/ratelimit
# Rules served by default (./config); RUNTIME_ROOT or --config pick others.
COPY config /etc/floodgate/config
WORKDIR /etc/floodgate
USER 65534:65534
# 8080: HTTP (/json, /healthcheck, /metrics); 8081: gRPC (RLS v3, health,
# reflection); 6070: admin (/rlconfig, /usage, /reload; loopback unless
# --admin-addr or DEBUG_HOST/DEBUG_PORT say otherwise).
EXPOSE 8080 8081 6070
ENTRYPOINT ["floodgate"]
CMD ["serve"]
