#!/bin/sh
# The part of the official image's docker-entrypoint.sh that compose.yaml relies on: started as
# root, own PGDATA and step down to postgres; on an empty PGDATA, initdb with POSTGRES_USER as
# the superuser and POSTGRES_PASSWORD as its password (scram-sha-256 over the network, trust on
# the local socket), then create POSTGRES_DB. A PGDATA that holds a cluster is used as it is.
set -eu
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 0700 "$PGDATA"
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set for a new database}"
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 >/dev/null
    rm -f "$pwfile"
    printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$db" != postgres ]; then
        printf 'CREATE DATABASE "%s";\n' "$db" | psql -q -v ON_ERROR_STOP=1 -U "$user" -d postgres
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "stand-in postgres: initialised $PGDATA for $user, database $db"
fi
exec "$@"
