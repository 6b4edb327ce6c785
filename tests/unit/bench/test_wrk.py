"""wrk's Lua script and the parsing of its result line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.throughput import combine, round_orders
from tests.bench.wrk import WrkError, WrkResult, lua_script, parse_histogram, parse_output

LINE = (
    'WRK_JSON {"requests":30000,"duration_us":10000000,"bytes":1,"connect_errors":0,'
    '"read_errors":1,"write_errors":0,"status_errors":2,"timeouts":3,"p50_us":1500,'
    '"p90_us":2500,"p99_us":9000,"mean_us":1700.5,"max_us":20000}'
)


def test_parse_reads_the_json_line_among_wrk_text() -> None:
    result = parse_output(f"Running 10s test @ http://x\n{LINE}\nRequests/sec: 3000\n")
    assert result.requests == 30000
    assert result.rps == pytest.approx(3000.0)
    assert result.p50_ms == 1.5
    assert result.p99_ms == 9.0
    assert result.mean_ms == pytest.approx(1.7005)
    assert result.errors == 6


def test_parse_without_result_line_fails_with_the_output() -> None:
    with pytest.raises(WrkError, match=r"(?s)no result line.*boom"):
        parse_output("boom")


def test_lua_script_sets_headers_quoted_and_defines_done() -> None:
    script = lua_script({"X-AuthenticationKeyId": 'a"b\\c'}, Path("/tmp/h.hist"))
    assert 'wrk.headers["X-AuthenticationKeyId"] = "a\\"b\\\\c"' in script
    assert 'HISTOGRAM_PATH = "/tmp/h.hist"' in script
    assert "done = function(summary, latency, requests)" in script


def test_lua_script_refuses_line_breaks_in_headers() -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        lua_script({"X": "a\r\nInjected: 1"}, Path("/tmp/h.hist"))


def test_parse_histogram_sums_repeated_values() -> None:
    assert parse_histogram("100 2\n250 1\n100 3\n\n") == {100: 5, 250: 1}


def _run(requests: int, seconds: float, histogram: dict[int, int], errors: int = 0) -> WrkResult:
    return WrkResult(
        requests=requests, duration_s=seconds, p50_ms=0.0, p90_ms=0.0, p99_ms=0.0, mean_ms=0.0,
        max_ms=0.0, connect_errors=0, read_errors=0, write_errors=0, status_errors=errors,
        timeouts=0, histogram=histogram,
    )


def test_combine_merges_rounds_exactly() -> None:
    # Round one is fast, round two slow: the merged p99 comes from the slow round's tail.
    fast = _run(98, 5.0, {1000: 98})
    slow = _run(2, 5.0, {9000: 2}, errors=1)
    merged = combine([fast, slow])
    assert merged.requests == 100
    assert merged.rps == pytest.approx(10.0)
    assert merged.p50_ms == 1.0
    assert merged.p99_ms == 9.0
    assert merged.errors == 1
    assert merged.rounds == 2


def test_rounds_alternate_direction() -> None:
    assert round_orders(3, 3) == [[0, 1, 2], [2, 1, 0], [0, 1, 2]]
