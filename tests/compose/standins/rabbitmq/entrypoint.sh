#!/bin/sh
# As the official image's docker-entrypoint.sh: a rabbitmq* command run as root steps down to the
# rabbitmq user (and rabbitmq-server first owns the data directory). RABBITMQ_DEFAULT_USER and
# RABBITMQ_DEFAULT_PASS, which the official image leaves to RabbitMQ itself, become the
# default_user / default_pass of a conf.d file here: that user is created on the first boot of an
# empty data directory, and guest is not.
set -eu
if [ "${1#rabbitmq}" != "$1" ] && [ "$(id -u)" = 0 ]; then
    if [ "$1" = rabbitmq-server ]; then
        find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq '{}' +
    fi
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$0" "$@"
fi
# The node's cookie before anything else can make it: a CLI tool run as root first (a health
# check, say) would otherwise write one that the node cannot read.
cookie=/var/lib/rabbitmq/.erlang.cookie
if [ "$1" = rabbitmq-server ] && [ ! -e "$cookie" ]; then
    (umask 277 && tr -dc A-Z < /dev/urandom | head -c 20 > "$cookie")
fi
if [ "$1" = rabbitmq-server ] && [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then
    umask 077
    printf 'default_user = %s\ndefault_pass = %s\n' \
        "$RABBITMQ_DEFAULT_USER" "${RABBITMQ_DEFAULT_PASS:?RABBITMQ_DEFAULT_PASS must be set}" \
        > /etc/rabbitmq/conf.d/20-default-user.conf
fi
exec "$@"
