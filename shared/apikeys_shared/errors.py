"""The exception tree of the shared key library.

    ApiKeysError
    ├── ConfigError          a setting is missing or malformed (names the variable)
    ├── MalformedKey         a key ID or secret is not of the documented form
    ├── EnvelopeError        an event body is not a CloudEvent of a version we know
    └── SignatureError       a signature does not verify, or its signing key is unknown
"""

from __future__ import annotations

__all__ = ["ApiKeysError", "ConfigError", "EnvelopeError", "MalformedKey", "SignatureError"]


class ApiKeysError(Exception):
    """Base of every error raised by apikeys_shared."""


class ConfigError(ApiKeysError):
    """A configuration value is missing or malformed; the message names the variable."""


class MalformedKey(ApiKeysError):
    """A key ID or key secret does not have the documented form."""


class EnvelopeError(ApiKeysError):
    """An event body is not a well-formed CloudEvent of a version this library knows."""


class SignatureError(ApiKeysError):
    """A signature does not verify against any trusted key."""
