#!/usr/bin/env bash
# The compose stack's one-shot `topics` step: creates the Kafka topics a topology names.
#
#   create-topics.sh TOPOLOGY           create them (idempotent: --if-not-exists)
#   create-topics.sh --print TOPOLOGY   only print them, one per line (what the tests compare
#                                       with tickstream's own topology parser)
#
# Topics: the raw topic(s) (one, or one per symbol), the three derived topics and the
# dead-letter topic, with the defaults the topology schema documents for keys left out. The
# changelog topic is not listed: enrich creates it itself (compacted, with its partition count).
# Runs inside the apache/kafka image (bash, awk, kafka-topics.sh), so it parses the few keys it
# needs with awk instead of a TOML library.
#
# Settings (environment, with defaults):
#   KAFKA_BOOTSTRAP=kafka:9092  TOPIC_PARTITIONS=3  TOPIC_REPLICATION_FACTOR=1
#   KAFKA_TOPICS=/opt/kafka/bin/kafka-topics.sh
set -euo pipefail

print_only=false
if [ "${1:-}" = "--print" ]; then
    print_only=true
    shift
fi
topology=${1:?usage: create-topics.sh [--print] TOPOLOGY_FILE}
[ -r "$topology" ] || { echo "create-topics: cannot read the topology $topology" >&2; exit 1; }

# Every quoted string of the keys that name topics, with the schema's defaults for absent keys.
topics() {
    awk '
        function strings(text,    out) {  # the "..." values in text, space-separated
            out = ""
            while (match(text, /"[^"]*"/)) {
                out = out substr(text, RSTART + 1, RLENGTH - 2) " "
                text = substr(text, RSTART + RLENGTH)
            }
            return out
        }
        { sub(/^[ \t]+/, ""); line = $0; sub(/[ \t]*#.*$/, "", line) }
        /^\[/ { section = line; next }
        section == "" && line ~ /^application_id[ \t]*=/ { split(strings(line), v, " "); app = v[1] }
        section == "[topics]" && match(line, /^[a-z_]+/) {
            key = substr(line, 1, RLENGTH)
            if (key == "raw_format") next
            if (key == "raw") {
                # One topic, or an inline table symbol = "topic": the values are the topics.
                value = line; sub(/^[^=]*=/, "", value)
                if (value ~ /{/) { gsub(/[A-Za-z0-9_]+[ \t]*=/, "", value) }
                found["raw"] = strings(value)
            } else {
                found[key] = strings(line)
            }
        }
        END {
            if (app == "") app = "tickstream"
            defaults["raw"] = "prices.raw"
            defaults["moving_average"] = "analytics.moving_average"
            defaults["volatility"] = "analytics.volatility"
            defaults["jumps"] = "analytics.jumps"
            defaults["dead_letter"] = app ".dlq"
            for (key in defaults) {
                n = split((key in found) ? found[key] : defaults[key], names, " ")
                for (i = 1; i <= n; i++) print names[i]
            }
        }
    ' "$topology" | sort -u
}

list=$(topics)
[ -n "$list" ] || { echo "create-topics: no topics found in $topology" >&2; exit 1; }
if $print_only; then
    echo "$list"
    exit 0
fi

bootstrap=${KAFKA_BOOTSTRAP:-kafka:9092}
kafka_topics=${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}
for topic in $list; do
    echo "create-topics: $topic (${TOPIC_PARTITIONS:-3} partitions) on $bootstrap"
    "$kafka_topics" --bootstrap-server "$bootstrap" --create --if-not-exists --topic "$topic" \
        --partitions "${TOPIC_PARTITIONS:-3}" --replication-factor "${TOPIC_REPLICATION_FACTOR:-1}"
done
echo "create-topics: done"
