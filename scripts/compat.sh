#!/usr/bin/env bash
# Tests tickstream against the reference system's OWN Python clients (`make compat`):
#
#   scripts/compat.sh [PYTEST_ARGS...]     e.g. scripts/compat.sh -k compose -x
#
#   tests/compat/test_reference_clients.py  the seed layout, read and written by kafka-python
#                                           (plain: no lz4/snappy/zstd) and queried by pymongo
#   tests/compat/test_compose.py            docker-compose.yml's tickstream services, run as
#                                           host processes (no Docker engine needed)
#
# The clients are installed once, exactly pinned and hash-checked (tests/compat/requirements.txt,
# pip --require-hashes), into a venv under the cache named after the requirements' hash, so
# changing a pin gets a fresh venv and never a half-updated one.
#
# Needs: python3 3.11 (the pinned binary wheels are cp311), the debug binary
# (cargo build --bin tickstream; TICKSTREAM_BIN overrides its path) and the services
# (make services-up; TICKSTREAM_KAFKA_BROKERS and TICKSTREAM_MONGODB_URI say where they are).
# test_compose*.py also start a mongod of their own, with access control on, from the binary
# services-up installed (TICKSTREAM_MONGOD overrides its path).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$TICKSTREAM_ROOT"

REQUIREMENTS=tests/compat/requirements.txt
REQUIREMENTS_HASH=$(sha256sum "$REQUIREMENTS" | cut -c1-12)
VENV=$TICKSTREAM_CACHE_DIR/compat-venv-$REQUIREMENTS_HASH
PYTHON=$VENV/bin/python
# What the plain `pip install kafka-python` of the reference does not have: with one of these
# installed, kafka-python would read lz4/snappy/zstd batches and the test would prove nothing.
CODEC_PACKAGES=(lz4 python-snappy zstandard crc32c)

check_python() {
    command -v python3 >/dev/null || fail "python3 not found (the tests need CPython 3.11)"
    python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
        || fail "python3 is $(python3 --version 2>&1); $REQUIREMENTS pins CPython 3.11 wheels"
}

install() {
    [ -f "$VENV/.complete" ] && return 0
    say "creating the compat venv (hash-pinned: $REQUIREMENTS) in $VENV (once)"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || fail "python3 -m venv $VENV failed (Debian: apt-get install python3-venv)"
    "$PYTHON" -m pip install -q --disable-pip-version-check --require-hashes --only-binary :all: \
        -r "$REQUIREMENTS" || fail "pip could not install $REQUIREMENTS (is PyPI reachable?)"
    local problems
    problems=$("$PYTHON" -m pip check 2>&1) || fail "the packages of $REQUIREMENTS do not fit together: $problems"
    check_no_codecs
    touch "$VENV/.complete"
}

check_no_codecs() {
    local installed package
    installed=$("$PYTHON" -m pip list --format=freeze --disable-pip-version-check | cut -d= -f1 \
        | tr '[:upper:]_' '[:lower:]-')
    for package in "${CODEC_PACKAGES[@]}"; do
        if grep -qx -- "$package" <<<"$installed"; then
            fail "$VENV has $package: kafka-python must be the plain package, as the reference installs it"
        fi
    done
}

check_python
install
check_no_codecs
say "pytest tests/compat with $("$PYTHON" -m pip list --format=freeze --disable-pip-version-check \
    | grep -iE '^(kafka-python|pymongo|pyyaml|pytest)==' | tr '\n' ' ')"
# No __pycache__ in the checkout (and no .pytest_cache: tests/compat/pytest.ini).
export PYTHONDONTWRITEBYTECODE=1
# The mongod scripts/mongodb.sh installs (its MONGOD).
export TICKSTREAM_MONGOD=${TICKSTREAM_MONGOD:-$TICKSTREAM_CACHE_DIR/mongodb-6.0.5/fiftyone/db/bin/mongod}
exec "$PYTHON" -m pytest -q tests/compat "$@"
