"""wrk's Lua script and the parsing of its result line."""

from __future__ import annotations

import pytest

from tests.bench.wrk import WrkError, lua_script, parse_output

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
    script = lua_script({"X-AuthenticationKeyId": 'a"b\\c'})
    assert 'wrk.headers["X-AuthenticationKeyId"] = "a\\"b\\\\c"' in script
    assert "done = function(summary, latency, requests)" in script


def test_lua_script_refuses_line_breaks_in_headers() -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        lua_script({"X": "a\r\nInjected: 1"})
