"""docs/configuration.md is what the code declares, and the code declares what it reads."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from apikeys_shared.config import generate_secrets
from apikeys_shared.settings import REQUIRED, Catalogue, Setting, shown_default
from tests.support.procs import ROOT


def _script(relative: str) -> ModuleType:
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"_doc_test_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


DOCS = _script("scripts/configuration_docs.py")


def test_the_page_is_generated_from_the_code() -> None:
    expected = DOCS.render(DOCS.catalogues())
    assert (ROOT / "docs" / "configuration.md").read_text() == expected, (
        "docs/configuration.md is out of date: python scripts/configuration_docs.py"
    )


class _Recording(Mapping[str, str]):
    """An environment that notes every variable asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        self.asked.add(name)
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _loaders(tmp_path: Path) -> Iterator[tuple[Catalogue, Callable[[Mapping[str, str]], Any],
                                                dict[str, str]]]:
    from auth_gateway.config import SETTINGS as GATEWAY
    from auth_gateway.config import load_config as load_gateway
    from key_service.config import CLIENT_SETTINGS, load_client_config
    from key_service.config import SETTINGS as KEY_SERVICE
    from key_service.config import load_config as load_key_service

    secrets = generate_secrets()
    run_local = _script("scripts/run_local.py")
    subscriber = _script("examples/subscriber.py")
    yield KEY_SERVICE, load_key_service, secrets
    yield GATEWAY, load_gateway, {**secrets, "GATEWAY_ROUTES": str(tmp_path / "routes.toml")}
    yield CLIENT_SETTINGS, load_client_config, {
        "APIKEYS_URL": "http://127.0.0.1:8081", "APIKEYS_TOKEN": "ksmt_x"}
    yield run_local.SETTINGS, run_local.load_settings, {}
    yield subscriber.SETTINGS, subscriber.load_config, {
        **secrets, "KEY_SERVICE_URL": "http://127.0.0.1:8081", "APIKEYS_TOKEN": "ksmt_x"}


def test_each_program_reads_exactly_the_variables_its_catalogue_lists(tmp_path: Path) -> None:
    import auth_gateway.config
    import key_service.config

    services = (key_service.config.SETTINGS, auth_gateway.config.SETTINGS,
                key_service.config.CLIENT_SETTINGS)
    documented = frozenset().union(*(s.names for s in services))
    for catalogue, load, environ in _loaders(tmp_path):
        env = _Recording(environ)
        load(env)
        if catalogue in services:
            assert env.asked == catalogue.names, catalogue.title
        else:
            # make run and the subscriber read some of the services' variables too.
            assert catalogue.names <= env.asked, catalogue.title
            assert env.asked <= catalogue.names | documented, catalogue.title


@pytest.mark.parametrize(
    ("setting", "shown"),
    [
        (Setting("A", REQUIRED, "m"), "required"),
        (Setting("A", None, "m"), "unset"),
        (Setting("A", None, "m", shown="generated"), "generated"),
        (Setting("A", 2.0, "m"), "`2`"),
        (Setting("A", 0.25, "m"), "`0.25`"),
        (Setting("A", 8081, "m"), "`8081`"),
        (Setting("A", True, "m"), "true"),
        (Setting("A", "", "m"), "empty"),
        (Setting("A", "x", "m"), "`x`"),
    ],
)
def test_defaults_are_shown_as_users_write_them(setting: Setting[Any], shown: str) -> None:
    assert shown_default(setting) == shown


def test_a_variable_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="listed twice: A"):
        Catalogue.of("t", "", (Setting("A", 1, "m"), Setting("A", 2, "n")))
