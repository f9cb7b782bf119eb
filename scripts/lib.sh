# Shared helpers for the service scripts. Sourced, never executed.
#
# Every path and port comes from an environment variable with a default, so two checkouts (or a
# user's own Kafka/MongoDB on the standard ports) do not collide:
#   TICKSTREAM_CACHE_DIR     installs, kept across runs   (default ~/.cache/tickstream)
#   TICKSTREAM_SERVICES_DIR  data, logs and pid files     (default <checkout>/.services)

set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore

TICKSTREAM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TICKSTREAM_CACHE_DIR=${TICKSTREAM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tickstream}
TICKSTREAM_SERVICES_DIR=${TICKSTREAM_SERVICES_DIR:-$TICKSTREAM_ROOT/.services}

say() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# fail MESSAGE [LOGFILE]: print what went wrong, the tail of the service log, and exit 1.
fail() {
    say "ERROR: $1"
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        say "last 40 lines of $2:"
        tail -n 40 "$2" >&2
    fi
    exit 1
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_of PIDFILE MARKER: print the pid recorded in PIDFILE if that process is alive AND its
# command line contains MARKER (our data dir), so a recycled pid is never mistaken for ours.
pid_of() {
    local pidfile=$1 marker=$2 pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker" || return 1
    echo "$pid"
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
wait_until() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
    say "$what after $((SECONDS + limit - deadline)) s"
}

# stop_pid PIDFILE MARKER NAME: SIGTERM the recorded process, wait up to 60 s, then SIGKILL.
stop_pid() {
    local pidfile=$1 marker=$2 name=$3 pid
    if ! pid=$(pid_of "$pidfile" "$marker"); then
        say "$name: not running (no live process recorded in $pidfile)"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid"
    if ! wait_until 60 "$name stopped" bash -c "! kill -0 $pid"; then
        say "$name (pid $pid) ignored SIGTERM for 60 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}
