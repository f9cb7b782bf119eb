#!/usr/bin/env bash
# Checks the deployment files without a Docker engine (`make check-deploy`, part of `make test`):
#
#   1. docker-compose.yml validates against the Compose Specification's JSON schema
#      (check-jsonschema's vendored copy, installed hash-pinned into the cache);
#   2. every ${VARIABLE} docker-compose.yml reads is documented in .env.example, and
#      .env.example leaves every password empty, never a real one;
#   3. promtool accepts deploy/prometheus/prometheus.yml and its rule files, and the rules pass
#      their unit tests (deploy/prometheus/tests: which alerts fire on which series);
#   4. the Grafana dashboard and provisioning files parse;
#   5. every file the Dockerfile COPYs from the build context exists and .dockerignore keeps it.
#
# That the dashboard and rules only use metrics the processors export, and that a real
# Prometheus scrapes a processor, is tested in tests/integration/deploy.rs; that the compose
# file's tickstream services (topics, ingest, enrich, sink) start and work as written, in
# tests/compat/test_compose.py (`make compat`).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$TICKSTREAM_ROOT"

CHECK_JSONSCHEMA_HOME=$TICKSTREAM_CACHE_DIR/check-jsonschema-0.39.0

install() {
    [ -f "$CHECK_JSONSCHEMA_HOME/.complete" ] && return 0
    say "installing check-jsonschema 0.39.0 (hash-pinned) into $CHECK_JSONSCHEMA_HOME (once)"
    rm -rf "$CHECK_JSONSCHEMA_HOME"
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$CHECK_JSONSCHEMA_HOME" \
        --require-hashes -r scripts/check-deploy/requirements.txt \
        || fail "pip could not install scripts/check-deploy/requirements.txt (is PyPI reachable?)"
    touch "$CHECK_JSONSCHEMA_HOME/.complete"
}

check_compose_schema() {
    PYTHONPATH=$CHECK_JSONSCHEMA_HOME python3 -m check_jsonschema \
        --builtin-schema vendor.compose-spec docker-compose.yml \
        || fail "docker-compose.yml does not follow the Compose Specification (errors above)"
}

check_env_example() {
    python3 - <<'PY' || fail ".env.example and docker-compose.yml disagree (see above)"
import re, sys
compose = open("docker-compose.yml").read()
example = open(".env.example").read()
# ${NAME}, ${NAME:-default}, ${NAME:?error}; $${...} is a literal dollar for the container.
used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", compose))
documented = set(re.findall(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=", example, re.M))
missing = sorted(used - documented)
if missing:
    sys.exit(f"docker-compose.yml reads {missing}, which .env.example does not document")
# Every password in the example is empty: a real secret must never be committed, and compose's
# `:?` refuses to start until .env sets one.
for name, value in re.findall(r"^([A-Za-z_0-9]*PASSWORD[A-Za-z_0-9]*)=(.*)$", example, re.M):
    if value.strip():
        sys.exit(f".env.example sets {name}: leave it empty (compose refuses to start until .env sets it)")
print(f"[check-deploy] .env.example documents all {len(used)} variables docker-compose.yml reads")
PY
}

check_prometheus() {
    command -v promtool >/dev/null \
        || fail "promtool not found: \`make deps\` installs it (Debian package prometheus)"
    promtool check config deploy/prometheus/prometheus.yml >/dev/null \
        || fail "promtool rejects deploy/prometheus (run: promtool check config deploy/prometheus/prometheus.yml)"
    promtool test rules deploy/prometheus/tests/*.yml >/dev/null \
        || fail "alert rule tests fail (run: promtool test rules deploy/prometheus/tests/*.yml)"
    say "promtool accepts deploy/prometheus/prometheus.yml and its rules; rule tests pass"
}

check_grafana() {
    local file
    for file in deploy/grafana/dashboards/*.json; do
        python3 -m json.tool "$file" >/dev/null || fail "$file is not valid JSON"
    done
    for file in deploy/grafana/provisioning/*/*.yml; do
        PYTHONPATH=$CHECK_JSONSCHEMA_HOME python3 -c \
            'import sys, ruamel.yaml; ruamel.yaml.YAML(typ="safe").load(open(sys.argv[1]))' "$file" \
            || fail "$file is not valid YAML"
    done
    say "grafana files parse"
}

check_dockerfile_sources() {
    python3 - <<'PY' || fail "the Dockerfile copies what the build context lacks (see above)"
import fnmatch, os, re, sys
ignored = [line.strip().rstrip("/") for line in open(".dockerignore")
           if line.strip() and not line.startswith("#")]
def excluded(path):
    return any(path == p or path.startswith(p + "/") or fnmatch.fnmatch(path, p)
               or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in ignored)
sources = []
for line in open("Dockerfile"):
    words = line.split()
    if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
        sources += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
problems = [f"COPY {s}: missing" for s in sources if s != "." and not os.path.exists(s)]
problems += [f"COPY {s}: excluded by .dockerignore" for s in sources if s != "." and excluded(s)]
if problems:
    sys.exit("\n".join(problems))
print(f"[check-deploy] the Dockerfile's {len(sources)} build-context sources exist and are not ignored")
PY
}

install
check_compose_schema
check_dockerfile_sources
check_env_example
check_prometheus
check_grafana
say "deployment files ok"
