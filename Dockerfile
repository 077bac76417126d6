# syntax=docker/dockerfile:1
# Multi-stage build: compile with the Rust toolchain, run on a slim base as a non-root user.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Strip symbols: the image carries only what runs.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --bin oauth-shim

# distroless/cc: glibc and CA data, no shell or package manager (~25 MB with the binary). TLS is
# rustls with built-in roots, so nothing else is needed. Probes are HTTP (/healthz, /readyz).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/oauth-shim /usr/local/bin/oauth-shim
COPY config/oauth-shim.toml /etc/oauth-shim/oauth-shim.toml
USER nonroot
# Mount your config over /etc/oauth-shim/oauth-shim.toml; pass secrets as environment variables
# named by each client's secret_env. The config must listen on 0.0.0.0 to be reachable.
ENV OAUTH_SHIM_CONFIG=/etc/oauth-shim/oauth-shim.toml
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/oauth-shim"]
CMD ["serve"]
