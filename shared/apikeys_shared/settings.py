"""Environment variables declared once: name, default, bounds and meaning, in one object each.

Each service's ``config`` module declares every variable it reads as a ``Setting`` and lists them
in a catalogue (``SETTINGS``). The same object reads the variable (through ``Env``, which names
the variable in every error) and gives its default to the config dataclass's field, so that a
default is written exactly once; ``scripts/configuration_docs.py`` renders the catalogues as the
tables of docs/configuration.md, and a test fails when the page and the code differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["REQUIRED", "Catalogue", "Env", "Setting", "shown_default"]

T = TypeVar("T")


@dataclass(frozen=True)
class Env:
    """Typed, named access to a mapping of environment variables."""

    values: Mapping[str, str]

    def text(self, name: str, default: str | None = None) -> str:
        """A string; required when ``default`` is None. Blank counts as unset."""
        value = self.values.get(name, "").strip()
        if value:
            return value
        if default is None:
            raise ConfigError(f"{name} is required but not set")
        return default

    def optional(self, name: str) -> str | None:
        """A string, or None when unset or blank."""
        value = self.values.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
        """An integer within ``[minimum, maximum]``."""
        raw = self.values.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {value}")
        return value

    def number(self, name: str, default: float, *, minimum: float | None = None,
              maximum: float | None = None) -> float:
        """A number within ``[minimum, maximum]``."""
        raw = self.values.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
        if value != value or (minimum is not None and value < minimum):
            raise ConfigError(f"{name} must be at least {minimum}, got {raw}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {raw}")
        return value

    def log_level(self, name: str, default: str = "INFO") -> str:
        """One of ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` (any case)."""
        level = self.text(name, default).upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"{name} must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        return level

    def flag(self, name: str, default: bool) -> bool:
        """``1/true/yes/on`` or ``0/false/no/off``."""
        raw = self.values.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")

    def url(self, name: str, default: str | None, schemes: tuple[str, ...]) -> str:
        """A URL whose scheme is one of ``schemes`` and that names a host (or a socket path)."""
        value = self.text(name, default)
        try:
            parts = urlsplit(value)
        except ValueError:
            # e.g. "Invalid IPv6 URL": the library's own error, naming the variable (and not
            # quoting the value, which may hold a password).
            raise ConfigError(f"{name} is not a valid URL") from None
        if parts.scheme not in schemes:
            raise ConfigError(f"{name} must be a {' or '.join(schemes)} URL")
        if not parts.netloc and parts.scheme not in ("unix", "sqlite+aiosqlite"):
            raise ConfigError(f"{name} must name a host")
        return value


class _Required:
    """The default of a variable that must be set."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable.

    ``default`` is what the service uses when the variable is unset or blank (``None``: "unset",
    a feature left off; ``REQUIRED``: the service refuses to start without it). ``shown`` replaces
    the default in the docs when the value alone would mislead (a path derived from another
    setting, say). ``minimum`` / ``maximum`` bound numbers, inclusive.
    """

    name: str
    default: T
    meaning: str
    minimum: float | None = None
    maximum: float | None = None
    shown: str | None = None

    @property
    def required(self) -> bool:
        """Whether the service refuses to start without it."""
        return self.default is REQUIRED

    def _text_default(self) -> str | None:
        return None if self.required else str(self.default)

    def text(self: Setting[str], env: Env) -> str:
        """The value as text (the default when unset or blank)."""
        return env.text(self.name, self._text_default())

    def optional(self: Setting[str | None], env: Env) -> str | None:
        """The value as text, or None when unset or blank."""
        return env.optional(self.name)

    def integer(self: Setting[int], env: Env) -> int:
        """The value as an integer within the bounds."""
        return env.integer(
            self.name, self.default,
            minimum=None if self.minimum is None else int(self.minimum),
            maximum=None if self.maximum is None else int(self.maximum),
        )

    def number(self: Setting[float], env: Env) -> float:
        """The value as a number within the bounds."""
        return env.number(self.name, self.default, minimum=self.minimum, maximum=self.maximum)

    def flag(self: Setting[bool], env: Env) -> bool:
        """The value as a flag (``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off``)."""
        return env.flag(self.name, self.default)

    def url(self: Setting[str], env: Env, schemes: tuple[str, ...]) -> str:
        """The value as a URL of one of ``schemes``."""
        return env.url(self.name, self._text_default(), schemes)

    def log_level(self: Setting[str], env: Env) -> str:
        """The value as a log level name."""
        return env.log_level(self.name, self.default)


def shown_default(setting: Setting[Any]) -> str:
    """The default as the docs show it."""
    if setting.shown is not None:
        return setting.shown
    value = setting.default
    if setting.required:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"`{value:g}`"
    if value == "" or value == ():
        return "empty"
    return f"`{value}`"


@dataclass(frozen=True)
class Catalogue:
    """The variables one program reads, in the order its docs list them."""

    title: str
    intro: str
    settings: tuple[Setting[Any], ...]

    @property
    def names(self) -> frozenset[str]:
        """Every variable's name."""
        return frozenset(s.name for s in self.settings)

    @classmethod
    def of(cls, title: str, intro: str, settings: Iterable[Setting[Any]]) -> Catalogue:
        """A catalogue; ValueError when a name is listed twice."""
        items = tuple(settings)
        names = [s.name for s in items]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{title}: listed twice: {', '.join(twice)}")
        return cls(title, intro, items)
