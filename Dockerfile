# session-proxy container image.
#   docker build -t session-proxy .
#   docker run -p 6380:6380 -p 9180:9180 \
#     -v $PWD/config/container.toml:/etc/session-proxy/config.toml:ro session-proxy
# The config is read from /etc/session-proxy/config.toml (mount yours there). It
# must listen on 0.0.0.0 to be reachable from outside the container. The
# HEALTHCHECK asks the admin listener that config names (`session-proxy
# healthcheck`), so it follows whatever [admin] address you set; without an
# [admin] section the container reports unhealthy.
#
# Base images are pinned by tag. For reproducible builds pin them by digest
# in your registry: `docker pull rust:1-bookworm && docker inspect --format
# '{{index .RepoDigests 0}}' rust:1-bookworm` gives `rust@sha256:...` to use
# in FROM (and the same for debian:bookworm-slim).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin session-proxy \
    && strip target/release/session-proxy

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin session-proxy \
    && mkdir -p /etc/session-proxy
COPY --from=build /src/target/release/session-proxy /usr/local/bin/session-proxy
COPY config/container.toml /etc/session-proxy/config.toml
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 6380 9180
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["/usr/local/bin/session-proxy", "healthcheck", "/etc/session-proxy/config.toml"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/session-proxy"]
CMD ["--config", "/etc/session-proxy/config.toml"]
