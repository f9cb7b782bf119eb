# syntax=docker/dockerfile:1
# The `tickstream` binary in a small runtime image; one image for every processor:
#   docker run tickstream:local ingest|enrich|sink|query …
# Built by `make up` (docker compose); on its own: `docker build -t tickstream:local .`

# Base images are pinned by digest (manifest lists from docker-library/repo-info: rust at commit
# 0afc2e65, debian at 05f354f0, both built on the Debian snapshot of 2026-08-03); the tag is for
# people, the digest is what is pulled. Update tag and digest together.

# --- build: the Rust toolchain plus what librdkafka's bundled build needs --------------------
FROM rust:1.97.1-bookworm@sha256:593db038d36ea0d2e5b22a2e095eb95dbec607d88d658c2f35f65ee880b4f93a AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential pkg-config perl zlib1g-dev libssl-dev libsasl2-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io downloads and compiled dependencies between builds;
# the binary is copied out of the cached target dir so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tickstream \
    && install -m 0755 target/release/tickstream /usr/local/bin/tickstream

# --- runtime: the shared libraries the binary links, nothing else -----------------------------
FROM debian:bookworm-slim@sha256:abd67ffcfa541b485a3dff59865ab629aa048a6c613e639d36e7456b0b229241 AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 libsasl2-2 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tickstream \
    && useradd --system --uid 10001 --gid tickstream --home-dir /var/lib/tickstream \
        --shell /usr/sbin/nologin tickstream \
    && install -d -m 0700 -o tickstream -g tickstream /var/lib/tickstream /var/lib/tickstream/state
COPY --from=build /usr/local/bin/tickstream /usr/local/bin/tickstream
COPY deploy/docker/entrypoint.sh /usr/local/bin/tickstream-entrypoint
COPY deploy/docker/healthcheck.sh /usr/local/bin/tickstream-healthcheck
COPY topologies/ /etc/tickstream/topologies/

# Defaults for a container; every one can be overridden with -e / compose `environment`.
ENV TICKSTREAM_TOPOLOGY=/etc/tickstream/topologies/default.toml \
    TICKSTREAM_METRICS_ADDR=0.0.0.0:9464 \
    TICKSTREAM_STATE_DIR=/var/lib/tickstream/state \
    TICKSTREAM_LOG_FORMAT=json
USER tickstream:tickstream
WORKDIR /var/lib/tickstream
# enrich's window state; a new volume here inherits the directory's owner and mode (0700).
VOLUME ["/var/lib/tickstream/state"]
EXPOSE 9464
# bash's /dev/tcp, no curl: see deploy/docker/healthcheck.sh.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/tickstream-healthcheck"]
# The binary handles SIGTERM itself (commit, close, exit 0), so it runs as PID 1: the entrypoint
# only sets umask 077 (files 0600, directories 0700, whatever Docker's default) and execs it.
ENTRYPOINT ["/usr/local/bin/tickstream-entrypoint"]
CMD ["--help"]
