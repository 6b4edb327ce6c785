"""Finding the processes a run started, by a marker variable every one of them inherits."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from tests.support.procs import ROOT

__all__ = ["MARKER", "RUN_LOCAL", "marked_pids", "start_run_local", "wait_banner"]

MARKER = "APIKEYS_RUN_TEST_MARKER"
RUN_LOCAL = ROOT / "scripts" / "run_local.py"


def marked_pids(marker: str) -> list[int]:
    """Every process on this machine whose environment carries ``MARKER=marker``."""
    needle = f"{MARKER}={marker}".encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def start_run_local(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``scripts/run_local.py`` in a session of its own, its output in ``log``."""
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, str(RUN_LOCAL)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_banner(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> str:
    """Wait until the stack is up (the banner is printed); its output so far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "apikeys is running" in text:
            return text
        assert proc.poll() is None, f"run_local exited early:\n{text}"
        time.sleep(0.2)
    raise AssertionError(f"run_local did not come up:\n{log.read_text(errors='replace')}")
