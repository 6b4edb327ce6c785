"""Instructions per request, counted by valgrind's callgrind: the measure that does not drift.

Requests per second on a shared machine move by a quarter from one run to the next; the number
of instructions a gateway process executes for a request does not (callgrind counts them, and
the same requests give the same count whatever else the machine is doing). So the cost of
authentication is also measured that way: one single-worker gateway runs under callgrind, and
the same sequence of requests (one keep-alive connection, one request at a time) is sent for
each request class, counting from zero for each.

Work done on a timer rather than per request is kept out of the count: the failure counter's
read of other processes' blocks (every 0.25 s by default) and L1's expiry (30 s) are set to an
hour and a day for this process, since under callgrind (some 50 times slower) they would fall
on far fewer requests per occurrence than at full speed. Everything else is as shipped, the
access log included. One request at a time also means one event-loop turn per request, which
under load is shared by several: the absolute counts are an upper bound, the ratio is the point.
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .admin import IssuedKey
from .stack import BenchStack

__all__ = [
    "AUTH",
    "FORWARD_AUTH",
    "OPEN",
    "OPEN_WITH_CREDENTIALS",
    "InstructionResult",
    "measure_instructions",
]

OPEN = "unauthenticated route (auth = \"none\")"
OPEN_WITH_CREDENTIALS = "unauthenticated route, the credential headers sent anyway (information)"
AUTH = "authenticated route (valid key)"
FORWARD_AUTH = "forward-auth verdict (GET /_auth/verify, valid key: 204)"
# The request classes, by label: (path, whether the key's headers are sent, the answer).
CLASSES: dict[str, tuple[str, bool, int]] = {
    OPEN: ("/open/x", False, 200),
    OPEN_WITH_CREDENTIALS: ("/open/x", True, 200),
    AUTH: ("/auth/x", True, 200),
    FORWARD_AUTH: ("/_auth/verify", True, 204),
}
_WARMUP = 300  # uninstrumented, then as many again instrumented, per class
_TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)
_TRIGGER = re.compile(r"^desc: Trigger: dump (\S+)", re.MULTILINE)


class InstructionsError(RuntimeError):
    """valgrind is missing, or the gateway under it did not answer as expected."""


@dataclass(frozen=True)
class InstructionResult:
    """Instructions per request by class, and how many requests each count covers."""

    per_request: dict[str, float]
    requests: int
    valgrind: str


def _control(pid: int, *args: str) -> None:
    done = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise InstructionsError(f"callgrind_control {' '.join(args)}: {done.stderr.strip()}")


def _send(port: int, path: str, headers: dict[str, str], count: int, expect: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(count):
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != expect:
                raise InstructionsError(
                    f"GET {path} answered {resp.status}, expected {expect}")
    finally:
        conn.close()


def _dumped(directory: Path, pid: int) -> dict[str, int]:
    """Total instructions of each dump made by ``callgrind_control -d TAG``, by TAG."""
    totals: dict[str, int] = {}
    for path in directory.glob(f"callgrind.{pid}.out.*"):
        text = path.read_text(errors="replace")
        trigger, total = _TRIGGER.search(text), _TOTALS.search(text)
        if trigger and total:
            totals[trigger.group(1)] = int(total.group(1))
    return totals


def measure_instructions(stack: BenchStack, routes: Path, key: IssuedKey, requests: int, *,
                         labels: Sequence[str] = tuple(CLASSES), module: str = "auth_gateway",
                         prefix: str = "",
                         extra_env: Mapping[str, str] | None = None) -> InstructionResult:
    """Count instructions per request of each class (``labels``, of ``CLASSES``) in a gateway
    under callgrind, served by ``module`` (see ``BenchStack.start_gateway``) with ``extra_env``
    on top of its environment; each result is labelled ``prefix`` + the class."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise InstructionsError("valgrind is not installed (Debian package: valgrind)")
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    out_dir = stack.dir / "callgrind"
    out_dir.mkdir(exist_ok=True)
    port, proc = stack.start_gateway(
        routes, workers=1, name=f"callgrind-{module}", module=module,
        wrapper=["valgrind", "--tool=callgrind", "--instr-atstart=no",
                 f"--callgrind-out-file={out_dir}/callgrind.%p.out"],
        extra_env={"GATEWAY_FAILED_AUTH_SYNC": "3600", "GATEWAY_L1_TTL": "86400",
                   **(extra_env or {})},
        ready_timeout=300,
    )
    pid = proc.proc.pid
    classes = {
        prefix + label: (path, key.headers() if credentials else {}, expect)
        for label, (path, credentials, expect) in CLASSES.items() if label in labels
    }
    tags: dict[str, str] = {}
    try:
        for path, headers, expect in classes.values():
            _send(port, path, headers, _WARMUP, expect)
        _control(pid, "--instr=on")
        for path, headers, expect in classes.values():
            _send(port, path, headers, _WARMUP, expect)
        for number, (label, (path, headers, expect)) in enumerate(classes.items()):
            tags[label] = f"class{number}"
            _control(pid, "--zero")
            _send(port, path, headers, requests, expect)
            _control(pid, f"--dump={tags[label]}")
        _control(pid, "--instr=off")
        totals = _dumped(out_dir, pid)
    finally:
        stack.stop_process(proc)
    missing = [label for label, tag in tags.items() if tag not in totals]
    if missing:
        raise InstructionsError(f"callgrind wrote no count for: {', '.join(missing)}")
    return InstructionResult(
        per_request={label: totals[tag] / requests for label, tag in tags.items()},
        requests=requests, valgrind=version,
    )
