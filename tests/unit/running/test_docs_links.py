"""Every relative link of the README and docs/ names a file that exists, and an anchor it has."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.procs import ROOT

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#+ (.+)$", re.M)
_CODE = re.compile(r"```.*?```", re.S)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "deploy").glob("*/README.md"))]


def test_relative_links_resolve() -> None:
    broken: list[str] = []
    for page in _pages():
        text = _CODE.sub("", page.read_text())
        for target in _LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: {target}"
            if not file.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and file.suffix == ".md":
                anchors = {_anchor(h) for h in _HEADING.findall(_CODE.sub("", file.read_text()))}
                if anchor not in anchors:
                    broken.append(f"{where} (no such heading)")
    assert not broken, "\n".join(broken)
