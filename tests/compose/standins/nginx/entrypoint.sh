#!/bin/sh
# The parts of the official image's docker-entrypoint.sh (and its 15-local-resolvers.envsh and
# 20-envsubst-on-templates.sh) that compose.yaml relies on, for a command that starts with nginx:
#   NGINX_ENTRYPOINT_LOCAL_RESOLVERS set: NGINX_LOCAL_RESOLVERS = the nameservers of
#     /etc/resolv.conf (IPv6 ones in brackets), for a `resolver` line that works under any engine;
#   every /etc/nginx/templates/*.template becomes /etc/nginx/conf.d/* through envsubst, which
#     replaces only the variables set in the environment (nginx's own $variables stay).
set -eu
if [ "$1" = nginx ]; then
    if [ -n "${NGINX_ENTRYPOINT_LOCAL_RESOLVERS:-}" ]; then
        NGINX_LOCAL_RESOLVERS="$(awk 'BEGIN{ORS=" "} $1=="nameserver" {if ($2 ~ ":") {print "["$2"]"} else {print $2}}' /etc/resolv.conf)"
        NGINX_LOCAL_RESOLVERS="${NGINX_LOCAL_RESOLVERS% }"
        export NGINX_LOCAL_RESOLVERS
    fi
    templates=/etc/nginx/templates
    if [ -d "$templates" ]; then
        defined="$(printf '${%s} ' $(awk 'END { for (name in ENVIRON) print name }' < /dev/null))"
        for template in "$templates"/*.template; do
            [ -f "$template" ] || continue
            output="/etc/nginx/conf.d/$(basename "$template" .template)"
            envsubst "$defined" < "$template" > "$output"
            echo "$0: envsubst $template -> $output"
        done
    fi
fi
exec "$@"
