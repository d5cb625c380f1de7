# Multi-stage release build of both binaries: flashsale-api and flashsale-worker.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY workers workers
COPY testkit testkit
COPY migrations migrations
COPY web web
COPY benches benches
RUN cargo build --release --locked --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/flashsale-api /src/target/release/flashsale-worker /usr/local/bin/
USER 10001
ENV FLASHSALE_BIND=0.0.0.0:8080
# /metrics and /api/health for the compose network only: never published,
# never behind nginx.
ENV FLASHSALE_OPERATOR_BIND=0.0.0.0:9464
EXPOSE 8080
CMD ["flashsale-api", "serve"]
