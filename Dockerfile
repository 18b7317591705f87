# session-proxy container image.
#   docker build -t session-proxy .
#   docker run -p 6380:6380 -v $PWD/config/example.toml:/etc/session-proxy/config.toml:ro session-proxy
# The config is read from /etc/session-proxy/config.toml (mount yours there);
# it must listen on 0.0.0.0 to be reachable from outside the container.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin session-proxy

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin session-proxy \
    && mkdir -p /etc/session-proxy
COPY --from=build /src/target/release/session-proxy /usr/local/bin/session-proxy
COPY config/example.toml /etc/session-proxy/config.toml
USER session-proxy
EXPOSE 6380
ENTRYPOINT ["/usr/local/bin/session-proxy"]
CMD ["--config", "/etc/session-proxy/config.toml"]
