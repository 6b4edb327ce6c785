"""``python -m tests.bench`` (what ``make bench`` runs): the gateway benchmark, key_service's
(also at 1,000,000 keys), the gateway's start-up against a long history, 100,000 keys in
rotation, a flood of made-up key IDs, and the key list (list and search at 1,000,000 keys, the
Backoffice page's first rows at 100,000).

Each prints its own Markdown tables; the gateway's is also written to artifacts/bench/gateway.md.
Arguments are passed to the gateway benchmark (``--help`` lists them). The exit status is
non-zero when any benchmark could not run to the end; missed aims are reported, not failed.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.procs import ROOT

from .bench_gateway import main as gateway_main


def main(argv: list[str]) -> int:
    """Run the benchmarks in turn; a failure of one does not skip the next."""
    print("# Benchmarks\n", flush=True)
    command = "make bench" if not argv else " ".join([".venv/bin/python -m tests.bench", *argv])
    gateway = gateway_main(argv, command=command)
    if gateway == 130:
        return gateway
    sys.stdout.flush()
    statuses = [gateway]
    for module in ("tests.bench.bench_key_service", "tests.bench.bench_key_service_scale",
                   "tests.bench.bench_startup",
                   "tests.bench.bench_many_keys", "tests.bench.bench_flood",
                   "tests.bench.bench_key_list"):
        try:
            status = subprocess.run([sys.executable, "-m", module], cwd=ROOT,
                                    check=False).returncode
        except KeyboardInterrupt:
            return 130
        if status != 0:
            print(f"{module} exited {status}", file=sys.stderr)
        statuses.append(status)
        sys.stdout.flush()
    return next((status for status in statuses if status), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
