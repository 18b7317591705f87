# session-proxy container image.
#   docker build -t session-proxy .
#   docker run -p 6380:6380 -p 9180:9180 \
#     -v $PWD/config/container.toml:/etc/session-proxy/config.toml:ro session-proxy
# The config is read from /etc/session-proxy/config.toml (mount yours there). It
# must listen on 0.0.0.0 to be reachable from outside the container, and the
# HEALTHCHECK expects the admin listener on port 9180.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin session-proxy \
    && strip target/release/session-proxy

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin session-proxy \
    && mkdir -p /etc/session-proxy
COPY --from=build /src/target/release/session-proxy /usr/local/bin/session-proxy
COPY config/container.toml /etc/session-proxy/config.toml
USER session-proxy
EXPOSE 6380 9180
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9180/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/session-proxy"]
CMD ["--config", "/etc/session-proxy/config.toml"]
