#!/usr/bin/env bash
# compose with whichever engine is here: Docker Compose v2 (`docker compose`), else podman-compose
# on podman, with deploy/compose.podman-dns.yaml for podman older than 4.5 (docs/compose-testing.md).
#   scripts/compose.sh up -d --build      scripts/compose.sh down
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then
  exec docker compose "$@"
fi
if command -v podman-compose >/dev/null && command -v podman >/dev/null; then
  files=(-f compose.yaml)
  version=$(podman version --format '{{.Client.Version}}')
  if [[ "$(printf '%s\n' "$version" 4.5 | sort -V | head -n1)" != 4.5 ]]; then
    files+=(-f deploy/compose.podman-dns.yaml)
  fi
  exec podman-compose "${files[@]}" "$@"
fi
echo "no compose here: install Docker Compose v2, or podman and podman-compose" >&2
exit 1
