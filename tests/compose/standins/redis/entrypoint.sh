#!/bin/sh
# As the official image's docker-entrypoint.sh: a command that starts with redis-server, run as
# root, owns the working directory and steps down to the redis user; any other command (as
# compose.yaml's `sh -c "exec redis-server ..."`) runs as it is, as root.
set -eu
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
exec "$@"
