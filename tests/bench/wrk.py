"""Driving wrk: a Lua script that sets the headers and prints one JSON line, and its parsing.

wrk's own text output rounds latencies and changes units; its ``done()`` hook gets the exact
histogram, so the script prints the figures as one ``WRK_JSON {...}`` line that this module
parses. Latencies come back in microseconds, as wrk measures them.

With a file of key pairs, the script sends a different key with every request, going round the
file (``rotating_lua``); a scenario compared with it should send through the same script, so
that wrk's own per-request Lua cost is in both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from auth_gateway.credentials import ID_HEADER, SECRET_HEADER

__all__ = [
    "WrkError", "WrkResult", "lua_script", "parse_histogram", "parse_output", "rotating_lua",
    "run_wrk",
]

MARKER = "WRK_JSON "

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,'
    .. '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.3f,"max_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
  -- The exact latency histogram (microseconds, count), so that runs can be merged.
  local out = assert(io.open(HISTOGRAM_PATH, "w"))
  for i = 1, #latency do
    local value, count = latency(i)
    out:write(string.format("%d %d\\n", value, count))
  end
  out:close()
end
"""


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result line."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles and the error counts."""

    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int
    timeouts: int
    histogram: dict[int, int] = field(default_factory=dict)  # latency µs -> count

    @property
    def rps(self) -> float:
        """Completed requests per second over the measured duration."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        """Socket errors, timeouts and responses with a status of 400 or more."""
        return (self.connect_errors + self.read_errors + self.write_errors
                + self.status_errors + self.timeouts)


def _lua_string(value: str) -> str:
    # %q-style quoting is enough: header names and values here are ASCII without newlines.
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError("header names and values must not hold CR, LF or NUL")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_script(headers: Mapping[str, str], histogram_path: Path) -> str:
    """A wrk script: sends ``headers``, prints the JSON line, writes the latency histogram."""
    lines = [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    lines.append(f"HISTOGRAM_PATH = {_lua_string(str(histogram_path))}")
    return "\n".join(lines) + "\n" + _DONE


# Each thread reads the pairs and walks them in order from its own starting point (thread n of
# t starts n/t of the way round), so that the threads do not send the same key at once.
_ROTATING = """
local pairs_ = {}
for line in io.lines(KEYS_PATH) do
  local id, secret = line:match("^(%S+) (%S+)$")
  if id then pairs_[#pairs_ + 1] = {id, secret} end
end
local started = 0
setup = function(thread)
  thread:set("thread_number", started)
  started = started + 1
end
local index = 0
init = function(args)
  index = math.floor((thread_number or 0) * #pairs_ / THREADS)
end
request = function()
  index = index % #pairs_ + 1
  local pair = pairs_[index]
  wrk.headers[ID_HEADER] = pair[1]
  wrk.headers[SECRET_HEADER] = pair[2]
  return wrk.format()
end
"""


def rotating_lua(keys_path: Path, threads: int) -> str:
    """The part of a script that sends the pairs of ``keys_path`` (``ID SECRET`` lines) in turn."""
    return "\n".join([
        f"KEYS_PATH = {_lua_string(str(keys_path))}",
        f"THREADS = {threads}",
        f"ID_HEADER = {_lua_string(ID_HEADER)}",
        f"SECRET_HEADER = {_lua_string(SECRET_HEADER)}",
    ]) + _ROTATING


def parse_histogram(text: str) -> dict[int, int]:
    """``value count`` lines (as the script writes them) as a mapping."""
    histogram: dict[int, int] = {}
    for line in text.splitlines():
        if line.strip():
            value, count = line.split()
            histogram[int(value)] = histogram.get(int(value), 0) + int(count)
    return histogram


def parse_output(stdout: str) -> WrkResult:
    """The result from wrk's output (the ``WRK_JSON`` line), or WrkError."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER):])
            return WrkResult(
                requests=int(data["requests"]),
                duration_s=int(data["duration_us"]) / 1e6,
                p50_ms=int(data["p50_us"]) / 1000.0,
                p90_ms=int(data["p90_us"]) / 1000.0,
                p99_ms=int(data["p99_us"]) / 1000.0,
                mean_ms=float(data["mean_us"]) / 1000.0,
                max_ms=int(data["max_us"]) / 1000.0,
                connect_errors=int(data["connect_errors"]),
                read_errors=int(data["read_errors"]),
                write_errors=int(data["write_errors"]),
                status_errors=int(data["status_errors"]),
                timeouts=int(data["timeouts"]),
            )
    raise WrkError(f"wrk printed no result line; its output was:\n{stdout[-2000:]}")


def run_wrk(
    url: str,
    *,
    script_dir: Path,
    headers: Mapping[str, str] | None = None,
    connections: int = 64,
    threads: int = 2,
    duration_s: int = 10,
    timeout_s: int = 5,
    keys_file: Path | None = None,
) -> WrkResult:
    """Run wrk against ``url`` once (``--latency``) and return its parsed result.

    ``keys_file``: send its key pairs in turn (``rotating_lua``), beside ``headers``.
    """
    binary = shutil.which("wrk")
    if binary is None:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk; `make bench` does it)")
    script_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="wrk-", suffix=".lua", dir=script_dir)
    os.close(fd)
    script = Path(name)
    histogram_path = script.with_suffix(".hist")
    body = lua_script(headers or {}, histogram_path)
    if keys_file is not None:
        body += rotating_lua(keys_file, threads)
    script.write_text(body)
    args = [
        binary, "--latency", "-t", str(threads), "-c", str(connections),
        "-d", f"{duration_s}s", "--timeout", f"{timeout_s}s", "-s", str(script), url,
    ]
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=duration_s + timeout_s + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish: {' '.join(args)}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    result = parse_output(done.stdout)
    try:
        histogram = parse_histogram(histogram_path.read_text())
    except OSError as exc:
        raise WrkError(f"wrk wrote no latency histogram to {histogram_path}") from exc
    finally:
        script.unlink(missing_ok=True)
        histogram_path.unlink(missing_ok=True)
    return replace(result, histogram=histogram)
