#!/usr/bin/env bash
# Installs, idempotently, the system packages the build and the tests need on a Debian 12 machine.
# Already-installed packages cost one dpkg query; apt-get runs only when something is missing.
#
#   build:  gcc/g++/make/pkg-config/python3 (librdkafka's bundled build), zlib + OpenSSL headers
#           (rdkafka `ssl`), libsasl2 headers (SASL pass-through), perl (openssl-sys probes)
#   tests:  Java 17 + Maven (the Kafka broker), kcat (broker readiness and diagnosis),
#           prometheus (a real Prometheus scrapes a processor; promtool checks deploy/prometheus)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

packages=(build-essential pkg-config python3 python3-pip perl zlib1g-dev libssl-dev libsasl2-dev
    openjdk-17-jre-headless maven kcat ca-certificates prometheus)

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || fail "cargo not found: install Rust (1.88 or newer) with rustup"
java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])' || fail "Java 17+ is required for the Kafka broker"
say "system packages ok"
