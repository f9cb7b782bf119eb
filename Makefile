# tickstream — the two commands users need are `make run` and `make test`; the rest are parts.
#
# Service ports and dirs are environment variables (see scripts/kafka.sh, scripts/mongodb.sh);
# the tests read the same variables, so overriding a port here reaches both.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export TICKSTREAM_KAFKA_PORT ?= 39092
export TICKSTREAM_MONGODB_PORT ?= 37017
export TICKSTREAM_KAFKA_BROKERS ?= 127.0.0.1:$(TICKSTREAM_KAFKA_PORT)
export TICKSTREAM_MONGODB_URI ?= mongodb://127.0.0.1:$(TICKSTREAM_MONGODB_PORT)/?replicaSet=rs0

CARGO ?= cargo

.PHONY: help run deps services-up services-down services-status test check fmt lint unit compat build up-ui \
	bench check-deploy up down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

run: deps ## the whole pipeline in one process, no broker or database: live view, results in ./data
	$(CARGO) run --quiet -- run $(ARGS)

deps: ## install the system packages the build and tests need (idempotent)
	@scripts/deps.sh

services-up: deps ## start Apache Kafka (KRaft) and MongoDB (replica set) on 127.0.0.1
	@scripts/services.sh up

services-down: ## stop the services services-up started
	@scripts/services.sh down

services-status: ## show whether the services run and answer
	@scripts/services.sh status

build: ## build everything in debug mode
	$(CARGO) build --workspace --all-targets

fmt: ## format the code
	$(CARGO) fmt --all

lint: ## formatting and clippy, as CI checks them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: ## the tests, without starting services (integration tests fail if none run)
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	@# 10 million ticks against a naive recomputation: worth a release build of one small crate.
	$(CARGO) test -p tickstream-window --release -- --ignored

# The reference system's own Python clients (plain kafka-python, pymongo) against the seed
# layout, and docker-compose.yml's tickstream services run as host processes: tests/compat.
# Needs the services (make services-up); PYTEST_ARGS="-k compose -x" selects and passes on.
compat: ## the reference's Python clients and docker-compose.yml against the binary (services up)
	$(CARGO) build --bin tickstream
	@TICKSTREAM_BIN="$(abspath $(or $(CARGO_TARGET_DIR),target))/debug/tickstream" scripts/compat.sh $(PYTEST_ARGS)

# The services are stopped whatever happened, and the first failure's status is kept.
test: deps ## everything: deps, services, fmt, clippy, all tests (cold: see README)
	@status=0; \
	$(MAKE) --no-print-directory services-up && \
	$(MAKE) --no-print-directory check || status=$$?; \
	$(MAKE) --no-print-directory services-down || true; \
	exit $$status

check: lint check-deploy unit compat

# Like test, the services are stopped afterwards whatever happened.
bench: deps ## every benchmark (cargo bench), services included; record results in BENCHMARKS.md
	@status=0; \
	$(MAKE) --no-print-directory services-up && \
	$(CARGO) bench || status=$$?; \
	$(MAKE) --no-print-directory services-down || true; \
	exit $$status

check-deploy: ## validate docker-compose.yml (Compose spec schema), .env.example, Prometheus config
	@scripts/check-deploy.sh

# The full distributed stack in Docker (docker-compose.yml); needs Docker with the compose plugin.
up: ## start the Docker stack: Kafka, MongoDB, ingest/enrich/sink, Prometheus, Grafana
	@command -v docker >/dev/null && docker compose version >/dev/null 2>&1 \
		|| { echo "make up needs Docker with the compose plugin (docker compose); none found" >&2; exit 1; }
	@[ -f .env ] || { echo "no .env: cp .env.example .env and set the passwords in it" >&2; exit 1; }
	docker compose up -d --build

up-ui: ## make up plus Kafdrop (profile "ui"; its image is not digest-pinned yet)
	@$(MAKE) --no-print-directory up
	docker compose --profile ui up -d kafdrop

down: ## stop the Docker stack (volumes are kept; add -v by hand to drop them)
	@command -v docker >/dev/null \
		|| { echo "make down needs Docker with the compose plugin (docker compose); none found" >&2; exit 1; }
	docker compose down
