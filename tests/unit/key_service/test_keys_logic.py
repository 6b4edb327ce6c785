"""Pure logic of the service layer: names, limits, list cursors and the search filter."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.dialects.sqlite import aiosqlite

from key_service.errors import BadRequest
from key_service.keys import (
    MAX_LIMIT,
    _Cursor,
    parse_limit,
    parse_query,
    search_filter,
    validate_name,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("a", "a"), ("  spaced  ", "spaced"), ("x" * 100, "x" * 100), ("Ünïcödé ✓", "Ünïcödé ✓"),
     (" " + "y" * 100 + "\n", "y" * 100)],
)
def test_good_names_are_trimmed(raw: str, clean: str) -> None:
    assert validate_name(raw) == clean


@pytest.mark.parametrize(
    "raw", ["", "   ", "\t\n", "x" * 101, "tab\there", "nul\x00", "bell\x07", 5, None, [], {}],
)
def test_bad_names_name_the_field(raw: object) -> None:
    with pytest.raises(BadRequest) as info:
        validate_name(raw)
    assert info.value.field == "name"
    assert info.value.detail


@given(st.text(max_size=120))
def test_a_name_is_accepted_exactly_when_it_is_1_to_100_printable_after_trimming(
    raw: str,
) -> None:
    stripped = raw.strip()
    ok = 1 <= len(stripped) <= 100 and stripped.isprintable()
    try:
        assert validate_name(raw) == stripped
        assert ok
    except BadRequest:
        assert not ok


def test_limits() -> None:
    assert parse_limit(None) == 50
    assert parse_limit("1") == 1
    assert parse_limit(str(MAX_LIMIT)) == MAX_LIMIT
    for raw in ("0", "501", "-3", "abc", "1.5", ""):
        with pytest.raises(BadRequest) as info:
            parse_limit(raw)
        assert info.value.field == "limit"


def test_cursors_round_trip() -> None:
    moment = datetime(2026, 11, 27, 15, 4, 5, 123456, tzinfo=UTC)
    key = "01890a5d-ac96-774b-bcce-b302099a8057"
    for cursor in (_Cursor("a", moment, key), _Cursor("r", moment, key), _Cursor("r")):
        assert _Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize(
    "raw",
    ["", "%%%", "bm90IGpzb24", "eyJwIjoiYSJ9", "eyJwIjoiYSIsInQiOm51bGwsImsiOm51bGx9",
     "eyJwIjoieCIsInQiOm51bGwsImsiOm51bGx9"],
)
def test_foreign_cursors_are_400(raw: str) -> None:
    with pytest.raises(BadRequest) as info:
        _Cursor.decode(raw)
    assert info.value.field == "cursor"


@given(st.text(max_size=200))
def test_any_text_as_cursor_is_a_cursor_or_a_400(raw: str) -> None:
    field = "cursor"
    try:
        _Cursor.decode(raw)
    except BadRequest as exc:
        field = exc.field or ""
    assert field == "cursor"


@pytest.mark.parametrize(
    ("raw", "query"),
    [(None, None), ("", None), ("   ", None), (" billing ", "billing"), ("x" * 100, "x" * 100),
     ("50% off_", "50% off_")],
)
def test_q_is_trimmed_and_blank_is_no_search(raw: str | None, query: str | None) -> None:
    assert parse_query(raw) == query


@pytest.mark.parametrize("raw", ["x" * 101, "tab\there", "nul\x00", "line\nbreak"])
def test_bad_q_names_the_parameter(raw: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_query(raw)
    assert info.value.field == "q"


@pytest.mark.parametrize(
    ("q", "dialect", "sql"),
    [
        # Wildcards and the escape character are plain characters of the fragment.
        ("50%_/x", "sqlite", "lower(api_keys.name) LIKE lower('%50/%/_//x%') ESCAPE '/'"),
        # Something that can begin a key ID is also tried as one, in lower case.
        ("01A2-", "postgresql",
         "api_keys.name ILIKE '%01A2-%' ESCAPE '/' OR api_keys.key_id LIKE '01a2-%'"),
        ("01A2-", "sqlite", "lower(api_keys.name) LIKE lower('%01A2-%') ESCAPE '/' OR "
         "api_keys.key_id >= '01a2-' AND api_keys.key_id < '01a2-\x7f'"),
        ("billing", "postgresql", "api_keys.name ILIKE '%billing%' ESCAPE '/'"),
    ],
)
def test_search_filter_sql(q: str, dialect: str, sql: str) -> None:
    # The drivers key_service uses (asyncpg does not double a literal's %).
    compiled = search_filter(q, dialect).compile(
        dialect=asyncpg.dialect() if dialect == "postgresql" else aiosqlite.dialect(),
        compile_kwargs={"literal_binds": True},
    )
    assert str(compiled) == sql
