#!/usr/bin/env bash
# Apache Kafka 4.x broker (KRaft, single node, combined broker+controller) on 127.0.0.1.
#
#   scripts/kafka.sh install|up|down|status
#
# install: fetch the broker jars from Maven Central once (scripts/kafka/pom.xml) into the cache.
# up:      format the log dir on first use, start the broker, wait until it answers metadata.
# down:    stop the broker this script started (by pid file, never by name).
#
# Settings (environment, with defaults):
#   TICKSTREAM_KAFKA_PORT=39092             client listener (PLAINTEXT)
#   TICKSTREAM_KAFKA_CONTROLLER_PORT=39093  KRaft controller listener
#   TICKSTREAM_KAFKA_HEAP=1g                broker max heap
#   TICKSTREAM_KAFKA_START_TIMEOUT=90       seconds to wait for readiness
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION=4.1.1 # keep in step with scripts/kafka/pom.xml
KAFKA_PORT=${TICKSTREAM_KAFKA_PORT:-39092}
KAFKA_CONTROLLER_PORT=${TICKSTREAM_KAFKA_CONTROLLER_PORT:-39093}
KAFKA_HEAP=${TICKSTREAM_KAFKA_HEAP:-1g}
START_TIMEOUT=${TICKSTREAM_KAFKA_START_TIMEOUT:-90}

KAFKA_HOME=$TICKSTREAM_CACHE_DIR/kafka-$KAFKA_VERSION
RUN_DIR=$TICKSTREAM_SERVICES_DIR/kafka
LOG_DIR=$RUN_DIR/data
LOG_FILE=$RUN_DIR/kafka.log
PID_FILE=$RUN_DIR/kafka.pid
CONFIG=$RUN_DIR/server.properties
BROKERS=127.0.0.1:$KAFKA_PORT

install() {
    if [ -f "$KAFKA_HOME/.complete" ]; then
        return 0
    fi
    command -v java >/dev/null || fail "java not found: Kafka $KAFKA_VERSION needs Java 17+ (run 'make deps')"
    command -v mvn >/dev/null || fail "mvn not found: it fetches the Kafka jars (run 'make deps')"
    say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_HOME (once)"
    rm -rf "$KAFKA_HOME"
    mkdir -p "$KAFKA_HOME/libs"
    mvn -q -B -f "$TICKSTREAM_ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$KAFKA_HOME/libs" -DincludeScope=runtime \
        || fail "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (is Maven Central reachable?)"
    touch "$KAFKA_HOME/.complete"
}

write_config() {
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    cat >"$CONFIG" <<PROPS
# Written by scripts/kafka.sh; edits are overwritten on the next 'up'.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$LOG_DIR
num.partitions=1
# A single node: every internal topic has one replica, so transactions work.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# Tests create and join many groups; do not wait 3 s before the first rebalance.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS
    cat >"$RUN_DIR/log4j2.properties" <<'PROPS'
# Broker logs go to stdout, which scripts/kafka.sh sends to kafka.log.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
PROPS
}

JAVA_CMD=(java -Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC
    "-Dlog4j2.configurationFile=$RUN_DIR/log4j2.properties" -cp "$KAFKA_HOME/libs/*")

ready() { kcat -L -b "$BROKERS" -m 3 >/dev/null 2>&1; }

up() {
    install
    # Readiness is a metadata request by kcat: without it a healthy broker would look dead.
    command -v kcat >/dev/null || fail "kcat not found: the readiness check needs it (run 'make deps')"
    if pid=$(pid_of "$PID_FILE" "$CONFIG"); then
        say "already running (pid $pid)"
    else
        if port_open "$KAFKA_PORT" || port_open "$KAFKA_CONTROLLER_PORT"; then
            fail "port $KAFKA_PORT or $KAFKA_CONTROLLER_PORT on 127.0.0.1 is taken by another process; set TICKSTREAM_KAFKA_PORT / TICKSTREAM_KAFKA_CONTROLLER_PORT"
        fi
        write_config
        if [ ! -f "$LOG_DIR/meta.properties" ]; then
            local cluster_id
            cluster_id=$(python3 -c 'import base64,uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
            # Static quorum (controller.quorum.voters), so --cluster-id rather than --standalone.
            # `--cluster-id=ID`, not `--cluster-id ID`: one id in 64 starts with "-" (URL-safe
            # base64), which the tool's argument parser would take for an option.
            "${JAVA_CMD[@]}" kafka.tools.StorageTool format "--cluster-id=$cluster_id" -c "$CONFIG" \
                >"$RUN_DIR/format.log" 2>&1 || fail "formatting the KRaft log dir failed" "$RUN_DIR/format.log"
        fi
        say "starting Kafka $KAFKA_VERSION on $BROKERS (log: $LOG_FILE)"
        # setsid: the broker outlives the make recipe that started it.
        # GC and safepoint pauses to a rotated file, as kafka-run-class.sh logs them: a broker
        # stalled long enough to be fenced says here whether the JVM paused.
        setsid "${JAVA_CMD[@]}" "-Xlog:gc,safepoint:file=$RUN_DIR/gc.log:time,uptime:filecount=2,filesize=10m" \
            kafka.Kafka "$CONFIG" >>"$LOG_FILE" 2>&1 </dev/null &
        echo $! >"$PID_FILE"
    fi
    if ! wait_until "$START_TIMEOUT" "Kafka answers metadata on $BROKERS" ready_or_dead; then
        pid_of "$PID_FILE" "$CONFIG" >/dev/null || fail "the Kafka broker exited during start-up" "$LOG_FILE"
        fail "Kafka did not answer a metadata request on $BROKERS within $START_TIMEOUT s" "$LOG_FILE"
    fi
    echo "export TICKSTREAM_KAFKA_BROKERS=$BROKERS"
}

# Succeeds when the broker is ready; also stops the wait early (by succeeding) once the
# process has died, and `up` then tells the two apart.
ready_or_dead() { ready || ! pid_of "$PID_FILE" "$CONFIG" >/dev/null; }

down() { stop_pid "$PID_FILE" "$CONFIG" kafka; }

status() {
    if pid=$(pid_of "$PID_FILE" "$CONFIG"); then
        if ready; then say "running (pid $pid) on $BROKERS, answering metadata"; else say "running (pid $pid) on $BROKERS, NOT answering metadata"; return 1; fi
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
