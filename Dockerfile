# pixelwatch scanner image: Debian bookworm-slim, Chromium from apt, runs as a non-root user so
# Chromium keeps its sandbox (the launcher adds --no-sandbox only when running as root).
#
#   docker build -t pixelwatch .
#   docker run --rm pixelwatch scan https://www.example-clinic.com/ --max-pages 50
#   docker run -d --name pixelwatch -v pixelwatch-data:/var/lib/pixelwatch \
#     -v $PWD/pixelwatch.toml:/etc/pixelwatch/pixelwatch.toml:ro -e PIXELWATCH_SMTP_PASSWORD \
#     pixelwatch watch --config /etc/pixelwatch/pixelwatch.toml
#
# Chromium's sandbox needs user namespaces; see docs/watch.md ("Container") if your container
# runtime's seccomp profile blocks them. Do not run the container as root to get around it.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock relay.example.toml ./
COPY src src
COPY rules rules
COPY migrations migrations
COPY demo demo
RUN cargo build --release --locked --bin pixelwatch \
    && strip target/release/pixelwatch

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium ca-certificates fonts-liberation tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 pixelwatch \
    && useradd --system --uid 10001 --gid pixelwatch --home-dir /var/lib/pixelwatch \
       --create-home --shell /usr/sbin/nologin pixelwatch
COPY --from=build /src/target/release/pixelwatch /usr/local/bin/pixelwatch
ENV CHROME=/usr/lib/chromium/chromium \
    PIXELWATCH_DB=/var/lib/pixelwatch/pixelwatch.db \
    HOME=/var/lib/pixelwatch
VOLUME ["/var/lib/pixelwatch"]
WORKDIR /var/lib/pixelwatch
USER pixelwatch:pixelwatch
# tini is PID 1: it forwards SIGTERM to pixelwatch (which shuts down cleanly) and reaps the
# browser's orphaned helper processes.
ENTRYPOINT ["/usr/bin/tini", "--", "pixelwatch"]
CMD ["--help"]
