#!/bin/sh
# The image's ENTRYPOINT: umask 077, so whatever the processors create (enrich's state store,
# sled's own files, run's data) is private to their user (files 0600, directories 0700) even
# where the code does not set a mode itself; then exec, so tickstream is PID 1 and receives
# SIGTERM directly. The binary is found next to this script (/usr/local/bin in the image).
umask 077
exec "$(dirname "$0")/tickstream" "$@"
