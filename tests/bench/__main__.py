"""``python -m tests.bench`` (what ``make bench`` runs): the gateway benchmark, then key_service's.

Each prints its own Markdown tables; the gateway's is also written to artifacts/bench/gateway.md.
Arguments are passed to the gateway benchmark (``--help`` lists them). The exit status is
non-zero when either benchmark could not run to the end; missed aims are reported, not failed.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.procs import ROOT

from .bench_gateway import main as gateway_main


def main(argv: list[str]) -> int:
    """Run both benchmarks in turn; a failure of the first does not skip the second."""
    print("# Benchmarks\n", flush=True)
    command = "make bench" if not argv else " ".join([".venv/bin/python -m tests.bench", *argv])
    gateway = gateway_main(argv, command=command)
    if gateway == 130:
        return gateway
    sys.stdout.flush()
    try:
        key_service = subprocess.run(
            [sys.executable, "-m", "tests.bench.bench_key_service"], cwd=ROOT, check=False,
        ).returncode
    except KeyboardInterrupt:
        return 130
    if key_service != 0:
        print(f"key_service benchmark exited {key_service}", file=sys.stderr)
    return gateway or key_service


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
