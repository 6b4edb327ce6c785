"""Render docs/configuration.md from the settings the programs declare (``SETTINGS``).

``python scripts/configuration_docs.py`` rewrites the page; ``--check`` exits 1 when the page
differs from what the code declares (the test suite runs the same comparison). Nothing about a
variable is written in the page by hand: change the ``Setting`` in the program's config module.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "shared")]

from apikeys_shared.settings import Catalogue, Setting, shown_default  # noqa: E402

PAGE = ROOT / "docs" / "configuration.md"

_HEAD = """\
# Configuration

Every setting is an environment variable, read once at start-up; a missing or malformed one stops
the program with an error naming it. Blank counts as unset. `python -m key_service
generate-secrets` prints a fresh set of the four deployment secrets (`APIKEYS_*`) as `NAME=value`
lines, and `make secrets` writes them into `.env` for the compose stack ([deploy.md](deploy.md));
`make run` makes its own in `data/secrets.env`.

This page is generated from the code (`python scripts/configuration_docs.py`), where each
variable, its default and its meaning are declared once; a test fails when the two differ.
"""


def _load_script(path: Path) -> ModuleType:
    """Import a script of the repository (not a package) by its path."""
    spec = importlib.util.spec_from_file_location(f"_settings_of_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def catalogues() -> list[Catalogue]:
    """Every program's catalogue, in the page's order."""
    from auth_gateway.config import SETTINGS as GATEWAY
    from key_service.config import CLIENT_SETTINGS
    from key_service.config import SETTINGS as KEY_SERVICE

    run_local = _load_script(ROOT / "scripts" / "run_local.py")
    subscriber = _load_script(ROOT / "examples" / "subscriber.py")
    return [KEY_SERVICE, GATEWAY, CLIENT_SETTINGS, run_local.SETTINGS, subscriber.SETTINGS]


def _bounds(setting: Setting[Any]) -> str:
    low, high = setting.minimum, setting.maximum
    if low is None and high is None:
        return ""
    def text(value: float) -> str:
        return str(int(value)) if float(value).is_integer() else f"{value:g}"
    if high is None:
        return f"≥ {text(low)}" if low is not None else ""
    if low is None:
        return f"≤ {text(high)}"
    return f"{text(low)}\N{EN DASH}{text(high)}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(items: list[Catalogue]) -> str:
    """The whole page."""
    parts = [_HEAD]
    for catalogue in items:
        parts.append(f"\n## {catalogue.title}\n\n{catalogue.intro}\n\n")
        parts.append("| variable | default | range | meaning |\n| --- | --- | --- | --- |\n")
        for setting in catalogue.settings:
            parts.append(
                f"| `{setting.name}` | {_cell(shown_default(setting))} | {_bounds(setting)} "
                f"| {_cell(setting.meaning)} |\n"
            )
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write the page, or with ``--check`` say whether it is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1, changing nothing, when the page is not current")
    args = parser.parse_args(argv)
    text = render(catalogues())
    if args.check:
        if PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is out of date: python scripts/configuration_docs.py",
                  file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
