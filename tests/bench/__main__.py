"""``python -m tests.bench`` (what ``make bench`` runs): the gateway benchmark, then key_service's,
then the key list's (``bench_key_list``: list and search at 1,000,000 keys, the Backoffice page's
first rows at 100,000).

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
    others = 0
    for module in ("tests.bench.bench_key_service", "tests.bench.bench_key_list"):
        sys.stdout.flush()
        try:
            code = subprocess.run([sys.executable, "-m", module], cwd=ROOT, check=False).returncode
        except KeyboardInterrupt:
            return 130
        if code != 0:
            print(f"{module} exited {code}", file=sys.stderr)
            others = others or code
    return gateway or others


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
