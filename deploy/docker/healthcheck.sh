#!/usr/bin/env bash
# The image's HEALTHCHECK: GET /healthz on the processor's own metrics address, healthy on 200.
#
# Plain bash (its /dev/tcp) instead of curl or wget: the runtime image stays free of an HTTP
# client nobody else needs, and of that client's CVEs. The port comes from
# TICKSTREAM_METRICS_ADDR (host:port; a wildcard host is reached through loopback).
set -uo pipefail

address=${TICKSTREAM_METRICS_ADDR:-127.0.0.1:9464}
port=${address##*:}
host=${address%:*}
case "$host" in "" | 0.0.0.0 | "[::]") host=127.0.0.1 ;; esac
host=${host#[}
host=${host%]}

if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
    echo "unhealthy: nothing listens on $host:$port" >&2
    exit 1
fi
printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
# The status line only; the read gives up after 3 s (a hung connect is ended by the
# HEALTHCHECK timeout).
if ! IFS=' ' read -r -t 3 _ status _ <&3; then
    echo "unhealthy: no answer from http://$host:$port/healthz" >&2
    exit 1
fi
exec 3<&-
if [ "$status" != "200" ]; then
    echo "unhealthy: http://$host:$port/healthz answered $status" >&2
    exit 1
fi
