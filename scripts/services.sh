#!/usr/bin/env bash
# The real services the integration tests (and a local distributed run) talk to.
#
#   scripts/services.sh up|down|status
#
# up prints the connection settings as shell exports; `make services-up` shows them, and
# `eval "$(scripts/services.sh up)"` puts them in your shell. See scripts/kafka.sh and
# scripts/mongodb.sh for the settings each service takes.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
here=$(dirname "${BASH_SOURCE[0]}")

case "${1:-}" in
    up)
        # Fetch both first (the slow part on a fresh machine), then start them.
        "$here/kafka.sh" install
        "$here/mongodb.sh" install
        "$here/kafka.sh" up
        "$here/mongodb.sh" up
        ;;
    down)
        rc=0
        "$here/kafka.sh" down || rc=1
        "$here/mongodb.sh" down || rc=1
        exit $rc
        ;;
    status)
        rc=0
        "$here/kafka.sh" status || rc=1
        "$here/mongodb.sh" status || rc=1
        exit $rc
        ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
