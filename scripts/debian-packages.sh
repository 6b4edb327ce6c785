#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks drive, when they are missing.
#   nginx      the forward-auth example and the benchmark's plain reverse proxy
#   chromium   the Backoffice page's browser tests (Playwright drives /usr/bin/chromium)
#   golang-go  runs the Go example of docs/events.md against signed events
#   podman, runc, netavark, aardvark-dns, iptables, debootstrap
#              the compose test: the container engine (runc: crun refuses this machine's
#              cgroups), its networks and their DNS, and the base of its stand-in images
#   wrk        the benchmark's load generator (only with --bench)
#   valgrind   callgrind, which counts the gateway's instructions per request (only with --bench)
set -euo pipefail
want=(nginx chromium fonts-dejavu-core golang-go podman runc netavark aardvark-dns iptables debootstrap)
[[ "${1:-}" == "--bench" ]] && want+=(wrk valgrind)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
