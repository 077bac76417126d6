# syntax=docker/dockerfile:1
# Multi-stage build: compile with the Rust toolchain, run on distroless as a numeric non-root
# user. Base images are pinned: the builder by its exact version tag (the toolchain the test
# suite was run with); the runtime by digest through RUNTIME_IMAGE (distroless publishes no
# version tags), see docs/deployment.md#container-image.
ARG BUILD_IMAGE=docker.io/library/rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
# jemalloc (the allocator) is compiled from C: the slim image has gcc, not make.
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Strip symbols: the image carries only what runs.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --bin oauth-shim

# distroless/cc: glibc and CA data, no shell or package manager (~25 MB with the binary). TLS is
# rustls with built-in roots, so nothing else is needed.
FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/oauth-shim /usr/local/bin/oauth-shim
# Built-in config: listens on 0.0.0.0 (proxy 8080, admin 9901), JSON logs, no clients (a
# warning at start). Mount your own over it.
COPY config/container.toml /etc/oauth-shim/oauth-shim.toml
# Numeric, so Kubernetes' runAsNonRoot can verify it (a user name cannot be checked).
# 65532 is distroless' "nonroot".
USER 65532:65532
ENV OAUTH_SHIM_CONFIG=/etc/oauth-shim/oauth-shim.toml
EXPOSE 8080 9901
# No shell or curl in the image: the binary probes its own admin port (GET /healthz on the
# address the config's [admin] listen names). Kubernetes ignores HEALTHCHECK; use the same
# command as an exec probe there, or httpGet probes on the admin port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/oauth-shim", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/oauth-shim"]
CMD ["serve"]
