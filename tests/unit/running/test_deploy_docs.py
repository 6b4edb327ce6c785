"""docs/deploy.md's table of compose variables says what compose.yaml does."""

from __future__ import annotations

import re

from tests.support.procs import ROOT

_DEFAULTED = re.compile(r"\$\{([A-Z_]+):-([^}]*)\}")
_REQUIRED = re.compile(r"\$\{([A-Z_]+):\?[^}]*\}")
_ROW = re.compile(r"^\| `([A-Z_]+)` \| ([^|]+) \|", re.M)


def test_every_compose_variable_is_in_the_table_with_its_default() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    expected = {name: f"`{default}`" if default else "empty"
                for name, default in _DEFAULTED.findall(compose)}
    expected.update({name: "required" for name in _REQUIRED.findall(compose)})
    page = (ROOT / "docs" / "deploy.md").read_text()
    section = page.split("### What `.env` holds", 1)[1].split("\n## ", 1)[0]
    documented = {name: default.strip() for name, default in _ROW.findall(section)}
    assert documented == expected
