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

.PHONY: help deps services-up services-down services-status test check fmt lint unit build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

deps: ## install the system packages the build and tests need (idempotent)
	@scripts/deps.sh

services-up: ## start Apache Kafka (KRaft) and MongoDB (replica set) on 127.0.0.1
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

# The services are stopped whatever happened, and the first failure's status is kept.
test: deps ## everything: deps, services, fmt, clippy, all tests (cold: see README)
	@status=0; \
	$(MAKE) --no-print-directory services-up && \
	$(MAKE) --no-print-directory check || status=$$?; \
	$(MAKE) --no-print-directory services-down || true; \
	exit $$status

check: lint unit
