"""The OpenAPI 3.1 document of the JSON API, served at ``/api/v1/openapi.json``.

Kept beside the handlers and checked against them by a schemathesis run in the test suite.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .audit import ACTIONS
from .auth import CSRF_HEADER, SESSION_COOKIE
from .internal import FEED_DEFAULT_LIMIT, FEED_MAX_LIMIT
from .keys import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_NAME_LENGTH,
    MAX_OVERLAP_SECONDS,
    MAX_QUERY_LENGTH,
)
from .middleware import API_BODY_LIMIT
from .receipts import MAX_WAIT_SECONDS
from .scopes import AUDIT_READ, EVENTS_READ, KEYS_READ, KEYS_WRITE, SCOPE_HELP, SCOPES
from .tokenformat import TOKEN_PATTERN
from .usage import RETENTION_DAYS

__all__ = ["OPENAPI", "add_openapi_route"]

_TIME = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
_KEY_ID = {
    "type": "string", "format": "uuid", "minLength": 36, "maxLength": 36,
    "description": "A lowercase UUID (36 characters); not secret",
}
_TOKEN_ID = {**_KEY_ID, "description": "The token's ID, a lowercase UUID; not secret"}
_ROLL_FIELDS: dict[str, Any] = {
    "revokes_at": {
        "type": ["string", "null"], "format": "date-time",
        "description": "A rolled key's scheduled revocation (RFC 3339, UTC); null otherwise "
                       "(and once the key is revoked)",
    },
    "replaces": {
        "type": ["string", "null"], "format": "uuid",
        "description": "The key this one was issued to replace (by a roll), or null",
    },
    "replaced_by": {
        "type": ["string", "null"], "format": "uuid",
        "description": "The key that replaced this one (it was rolled), or null",
    },
}
_LAST_USED = {
    "type": ["string", "null"], "format": "date-time",
    "description": "The latest request a gateway authenticated with this key, as gateways have "
                   "reported it (RFC 3339, UTC; up to a report interval, 30 s by default, "
                   "behind); null when none was ever reported",
}
_KEY_FIELDS = ["key_id", "name", "status", "issued_at", "revoked_at", *_ROLL_FIELDS,
               "last_used_at"]
_NAME = {
    "type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": r"\S",
    "description": (
        f"1-{MAX_NAME_LENGTH} printable characters after trimming white space (no control, "
        "format or separator character but the space); duplicates are allowed. Anything else "
        "is a 400 naming `name`"
    ),
}


def _ref(schema: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema}"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }


def _json(schema: str, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        **extra,
    }


_R = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "404": {"$ref": "#/components/responses/NotFound"},
    "409": {"$ref": "#/components/responses/Conflict"},
    "413": {"$ref": "#/components/responses/TooLarge"},
    "415": {"$ref": "#/components/responses/UnsupportedMediaType"},
    "429": {"$ref": "#/components/responses/TooManyRequests"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _R[code] for code in codes}


# Security requirements: alternatives, each a set that must all be met. A management token's
# entry lists the scope the operation needs (OpenAPI 3.1 allows role names for http schemes).
_READ: list[dict[str, list[str]]] = [{"sessionCookie": []}]
_WRITE: list[dict[str, list[str]]] = [{"sessionCookie": [], "csrfToken": []}]


def _read_or_token(scope: str) -> list[dict[str, list[str]]]:
    return [*_READ, {"managementToken": [scope]}]


def _write_or_token(scope: str) -> list[dict[str, list[str]]]:
    return [*_WRITE, {"managementToken": [scope]}]


def _key_links(key_id: str) -> dict[str, Any]:
    """OpenAPI links from an answer naming a key to what can be done with it next."""
    return {
        name: {"operationId": operation, "parameters": {"key_id": key_id}}
        for name, operation in (("GetTheKey", "getKey"), ("RollTheKey", "rollKey"),
                                ("RevokeTheKey", "revokeKey"))
    }


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


_PAGING = [
    {
        "name": "limit", "in": "query", "required": False,
        "description": f"Items per page (default {DEFAULT_LIMIT})",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {
        "name": "cursor", "in": "query", "required": False,
        "description": "The next_cursor of the previous page (opaque)",
        "schema": {"type": "string"},
    },
]
_KEY_PATH_PARAM = {
    "name": "key_id", "in": "path", "required": True, "schema": {"type": "string"},
    "description": "The key ID; anything that is not a lowercase UUID is answered 404",
}
_TOKEN_PATH_PARAM = {
    "name": "token_id", "in": "path", "required": True, "schema": {"type": "string"},
    "description": "The token ID; anything that is not a lowercase UUID is answered 404",
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "key_service API",
        "version": "1.0.0",
        "description": (
            "Issue, list, roll and revoke API keys for the Backoffice API. Two ways in. A "
            "person logs in with POST /api/v1/session, which sets the "
            f"`{SESSION_COOKIE}` cookie and returns a CSRF token that every POST, PUT, PATCH and "
            f"DELETE must send as `{CSRF_HEADER}`; only the system_administrator role may use "
            "/api/v1/keys, /api/v1/audit and /api/v1/tokens (others get 403, no session 401). "
            "A machine sends `Authorization: Bearer <management token>` instead, with no "
            "cookie and no CSRF token; a token may use the operations its scopes allow "
            "(each operation's security names the scope; a missing scope is a 403 naming it, "
            "a malformed, unknown or revoked token a 401) and never /api/v1/tokens. Request "
            f"bodies are limited to {API_BODY_LIMIT} bytes. Errors are RFC 9457 problem "
            "details."
        ),
    },
    "paths": {
        "/api/v1/session": {
            "post": {
                "operationId": "login",
                "summary": "Log in; sets a fresh session cookie and returns the CSRF token",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Login")}},
                },
                "responses": {
                    "200": _json(
                        "Session", "Logged in",
                        headers={"Set-Cookie": {
                            "description": f"{SESSION_COOKIE}=...; HttpOnly; SameSite=Strict",
                            "schema": {"type": "string"},
                        }},
                    ),
                    **_errors("400", "401", "413", "415", "429", "503"),
                },
            },
            "get": {
                "operationId": "showSession",
                "summary": "Who is logged in, with the session's CSRF token",
                "security": _READ,
                "responses": {"200": _json("Session", "The session"), **_errors("401", "503")},
            },
            "delete": {
                "operationId": "logout",
                "summary": "Log out",
                "security": _WRITE,
                "responses": {"204": {"description": "Logged out"},
                              **_errors("401", "403", "413", "503")},
            },
        },
        "/api/v1/keys": {
            "get": {
                "operationId": "listKeys",
                "summary": "List keys: active newest first, then revoked, latest revoked last",
                "description": (
                    "With q, only the keys whose name contains q (case-insensitive) or whose "
                    "key ID starts with it, in the same order. A next_cursor continues the "
                    "search it came from when given the same q."
                ),
                "security": _read_or_token(KEYS_READ),
                "parameters": [*_PAGING, {
                    "name": "q", "in": "query", "required": False,
                    "description": (
                        "Search: a fragment of the name, or the start of the key ID; trimmed, "
                        f"blank means no search, at most {MAX_QUERY_LENGTH} characters"
                    ),
                    "schema": {"type": "string", "maxLength": MAX_QUERY_LENGTH},
                }],
                "responses": {"200": _json("KeyList", "One page of keys"),
                              **_errors("400", "401", "403", "503")},
            },
            "post": {
                "operationId": "issueKey",
                "summary": "Issue a key; the only response that ever contains its secret",
                "security": _write_or_token(KEYS_WRITE),
                "requestBody": _body("NewKey"),
                "responses": {
                    "201": _json("IssuedKey", "Issued", headers={
                        "Location": {"schema": {"type": "string"}},
                        "Cache-Control": {"schema": {"type": "string", "const": "no-store"}},
                    }, links=_key_links("$response.body#/key_id")),
                    **_errors("400", "401", "403", "413", "415", "503"),
                },
            },
        },
        "/api/v1/keys/{key_id}": {
            "parameters": [_KEY_PATH_PARAM],
            "get": {
                "operationId": "getKey",
                "summary": "One key",
                "security": _read_or_token(KEYS_READ),
                "responses": {"200": _json("Key", "The key"),
                              **_errors("401", "403", "404", "503")},
            },
        },
        "/api/v1/keys/{key_id}/usage": {
            "parameters": [_KEY_PATH_PARAM],
            "get": {
                "operationId": "getKeyUsage",
                "summary": f"A key's last use and its requests per UTC day (the last "
                           f"{RETENTION_DAYS} days), as the gateways have reported them",
                "security": _read_or_token(KEYS_READ),
                "responses": {"200": _json("KeyUsage", "The key's usage"),
                              **_errors("401", "403", "404", "503")},
            },
        },
        "/api/v1/keys/{key_id}/roll": {
            "parameters": [_KEY_PATH_PARAM],
            "post": {
                "operationId": "rollKey",
                "summary": (
                    "Roll a key: issue its replacement now (same name; its secret is in this "
                    "response only) and revoke the old key overlap_seconds later. A key is "
                    "rolled once; the old key may still be revoked early by hand"
                ),
                "security": _write_or_token(KEYS_WRITE),
                "requestBody": _body("Roll"),
                "responses": {
                    "201": _json("RolledKey", "The replacement, and the old key as it is now",
                                 headers={
                        "Location": {"schema": {"type": "string"}},
                        "Cache-Control": {"schema": {"type": "string", "const": "no-store"}},
                    }, links=_key_links("$response.body#/key_id")),
                    "409": _problem("The key is revoked, or was rolled before"),
                    **_errors("400", "401", "403", "404", "413", "415", "503"),
                },
            },
        },
        "/api/v1/keys/{key_id}/revoke": {
            "parameters": [_KEY_PATH_PARAM],
            "post": {
                "operationId": "revokeKey",
                "summary": "Revoke a key (permanent); a rolled key may be revoked before its "
                           "revokes_at",
                "description": (
                    "The answer carries `propagation`, the revocation's receipt: how many live "
                    "gateway processes there are and which have applied the revocation's event "
                    "(a process has when its heartbeat's watermark reaches the event's "
                    "sequence). With `wait`, the call returns once every live process has "
                    "applied it, or when `wait` seconds have passed, whichever is first; "
                    "without it, at once (`sequence` is then null: the event has not been "
                    "numbered yet, so no process has it). Revoking a revoked key is 409; with "
                    "`wait`, the problem carries the receipt of the earlier revocation"
                ),
                "parameters": [{
                    "name": "wait", "in": "query", "required": False,
                    "description": (
                        f"Seconds to wait for every live gateway process to apply the "
                        f"revocation: above 0, at most {MAX_WAIT_SECONDS} (decimals allowed)"
                    ),
                    "schema": {"type": "number", "exclusiveMinimum": 0,
                               "maximum": MAX_WAIT_SECONDS},
                }],
                "security": _write_or_token(KEYS_WRITE),
                "responses": {
                    "200": _json("RevokedKey", "Revoked, with the revocation's receipt"),
                    "400": _problem("`wait` is not a number above 0 and at most 30"),
                    "409": {
                        "description": (
                            "The key is already revoked; with `wait`, `propagation` is the "
                            "receipt of its revocation"
                        ),
                        "content": {"application/problem+json": {"schema": {
                            "allOf": [_ref("Problem"), {
                                "type": "object",
                                "properties": {"propagation": _ref("Propagation")},
                            }],
                        }}},
                    },
                    **_errors("401", "403", "404", "413", "503"),
                },
            },
        },
        "/api/v1/events": {
            "get": {
                "operationId": "listEvents",
                "summary": "The key event feed for subscribers, without the keyed secret hashes",
                "description": (
                    "The signed key events with a sequence above `after`, in sequence order, in "
                    "their public form: the same CloudEvents as on RabbitMQ, whose `data` lacks "
                    "`secret_hash` and `hash_version`, under the dataschema "
                    "`urn:apikeys:key-record-public:N`, each signed by key_service (verify with "
                    "GET /api/v1/verify-keys; docs/events.md). Page with `after` = the last "
                    "sequence received until it reaches `last_sequence`."
                ),
                "security": _read_or_token(EVENTS_READ),
                "parameters": [
                    {
                        "name": "after", "in": "query", "required": False,
                        "description": "Exclusive: events with a greater sequence (the plain "
                                       "or the zero-padded form of a sequence)",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,20}$", "default": "0"},
                    },
                    {
                        "name": "limit", "in": "query", "required": False,
                        "description": f"Events per page (default {FEED_DEFAULT_LIMIT})",
                        "schema": {"type": "integer", "minimum": 1, "maximum": FEED_MAX_LIMIT,
                                   "default": FEED_DEFAULT_LIMIT},
                    },
                ],
                "responses": {"200": _json("EventPage", "One page of the feed"),
                              **_errors("400", "401", "403", "503")},
            },
        },
        "/api/v1/verify-keys": {
            "get": {
                "operationId": "listVerifyKeys",
                "summary": "The Ed25519 public keys that event signatures verify against",
                "description": (
                    "No authentication: public keys are not secrets. The signing key's own "
                    "(`current`) and, during a rotation, the previous ones, whose signatures "
                    "older events in the feed carry. A subscriber that meets an unknown "
                    "`x-signing-key` fetches this list again."
                ),
                "security": [],
                "responses": {"200": _json("VerifyKeys", "The trusted verify keys")},
            },
        },
        "/api/v1/audit": {
            "get": {
                "operationId": "listAudit",
                "summary": "Audit rows of every change to keys and tokens, newest first",
                "security": _read_or_token(AUDIT_READ),
                "parameters": _PAGING,
                "responses": {"200": _json("AuditList", "One page of audit rows"),
                              **_errors("400", "401", "403", "503")},
            },
        },
        "/api/v1/tokens": {
            "get": {
                "operationId": "listTokens",
                "summary": "List management tokens, newest first (administrators' sessions "
                           "only)",
                "security": _READ,
                "parameters": _PAGING,
                "responses": {"200": _json("TokenList", "One page of tokens"),
                              **_errors("400", "401", "403", "503")},
            },
            "post": {
                "operationId": "createToken",
                "summary": "Create a management token; the only response that ever contains "
                           "it (administrators' sessions only: a token cannot make tokens)",
                "security": _WRITE,
                "requestBody": _body("NewToken"),
                "responses": {
                    "201": _json("CreatedToken", "Created", headers={
                        "Cache-Control": {"schema": {"type": "string", "const": "no-store"}},
                    }, links={"RevokeTheToken": {
                        "operationId": "revokeToken",
                        "parameters": {"token_id": "$response.body#/token_id"},
                    }}),
                    **_errors("400", "401", "403", "413", "415", "503"),
                },
            },
        },
        "/api/v1/tokens/{token_id}/revoke": {
            "parameters": [_TOKEN_PATH_PARAM],
            "post": {
                "operationId": "revokeToken",
                "summary": "Revoke a management token (permanent; administrators' sessions "
                           "only)",
                "security": _WRITE,
                "responses": {
                    "200": _json("Token", "Revoked"),
                    "404": _problem("No token with this ID (or not a token ID at all)"),
                    "409": _problem("The token is already revoked"),
                    **_errors("401", "403", "413", "503"),
                },
            },
        },
    },
    "components": {
        "securitySchemes": {
            "sessionCookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            "csrfToken": {"type": "apiKey", "in": "header", "name": CSRF_HEADER},
            "managementToken": {
                "type": "http", "scheme": "bearer", "bearerFormat": "ksmt_ management token",
                "description": (
                    "A management token, created by an administrator (POST /api/v1/tokens). "
                    "Scopes: " + "; ".join(f"{k}: {v}" for k, v in SCOPE_HELP.items())
                ),
            },
        },
        "schemas": {
            "Login": {
                "type": "object",
                "required": ["username", "password"],
                "properties": {
                    "username": {
                        "type": "string", "minLength": 1, "maxLength": 64,
                        "description": "1-64 printable characters (no control, format or "
                                       "separator character but the space); anything else "
                                       "is a 400 naming `username`",
                    },
                    "password": {"type": "string", "minLength": 1, "maxLength": 1024},
                },
            },
            "Session": {
                "type": "object",
                "required": ["username", "role", "csrf_token"],
                "additionalProperties": False,
                "properties": {
                    "username": {"type": "string"},
                    "role": {"type": "string", "examples": ["system_administrator", "viewer"]},
                    "csrf_token": {"type": "string"},
                },
            },
            "NewKey": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": _NAME},
            },
            "Roll": {
                "type": "object",
                "required": ["overlap_seconds"],
                "properties": {
                    "overlap_seconds": {
                        "type": "integer", "minimum": 0, "maximum": MAX_OVERLAP_SECONDS,
                        "description": (
                            "How long the old key keeps working beside its replacement, in "
                            f"seconds: 0 to {MAX_OVERLAP_SECONDS} (30 days). The old key's "
                            "revokes_at is the replacement's issued_at plus this"
                        ),
                    },
                },
            },
            "Key": {
                "type": "object",
                "required": _KEY_FIELDS,
                "additionalProperties": False,
                "properties": {
                    "key_id": _KEY_ID,
                    "name": {"type": "string"},
                    "status": {"type": "string", "enum": ["active", "revoked"]},
                    "issued_at": _TIME,
                    "revoked_at": {"oneOf": [_TIME, {"type": "null"}],
                                   "description": "null while the key is active"},
                    **_ROLL_FIELDS,
                    "last_used_at": _LAST_USED,
                },
            },
            "KeyUsage": {
                "type": "object",
                "required": ["key_id", "last_used_at", "retention_days", "days"],
                "additionalProperties": False,
                "properties": {
                    "key_id": _KEY_ID,
                    "last_used_at": _LAST_USED,
                    "retention_days": {
                        "type": "integer", "const": RETENTION_DAYS,
                        "description": "How many UTC days, today included, counts are kept",
                    },
                    "days": {
                        "type": "array",
                        "description": "Requests per UTC day within the retention, oldest "
                                       "first; a day without requests is left out",
                        "items": {
                            "type": "object",
                            "required": ["day", "requests"],
                            "additionalProperties": False,
                            "properties": {
                                "day": {"type": "string", "format": "date"},
                                "requests": {
                                    "type": "integer", "minimum": 1,
                                    "description": "Requests the gateways authenticated with "
                                                   "the key that day (forwarded upstream, or "
                                                   "answered 204 by forward-auth)",
                                },
                            },
                        },
                    },
                },
            },
            "IssuedKey": {
                "type": "object",
                "required": [*_KEY_FIELDS, "secret"],
                "additionalProperties": False,
                "properties": {
                    "key_id": _KEY_ID,
                    "name": {"type": "string"},
                    "status": {"type": "string", "const": "active"},
                    "issued_at": _TIME,
                    "revoked_at": {"type": "null"},
                    "revokes_at": {"type": "null"},
                    "replaces": {"type": "null"},
                    "replaced_by": {"type": "null"},
                    "last_used_at": {"type": "null"},
                    "secret": {
                        "type": "string", "pattern": "^[0-9A-Za-z]{64}$",
                        "description": "The key secret, shown this once and never again",
                    },
                },
            },
            "RolledKey": {
                "type": "object",
                "required": [*_KEY_FIELDS, "secret", "replaced_key"],
                "additionalProperties": False,
                "properties": {
                    "key_id": _KEY_ID,
                    "name": {"type": "string", "description": "The old key's name"},
                    "status": {"type": "string", "const": "active"},
                    "issued_at": _TIME,
                    "revoked_at": {"type": "null"},
                    "revokes_at": {"type": "null"},
                    "replaces": {**_KEY_ID, "description": "The old key's ID"},
                    "replaced_by": {"type": "null"},
                    "last_used_at": {"type": "null"},
                    "secret": {
                        "type": "string", "pattern": "^[0-9A-Za-z]{64}$",
                        "description": "The new key's secret, shown this once and never again",
                    },
                    "replaced_key": {
                        **_ref("Key"),
                        "description": "The old key as it is now: active, with revokes_at and "
                                       "replaced_by set",
                    },
                },
            },
            "RevokedKey": {
                "type": "object",
                "required": [*_KEY_FIELDS, "propagation"],
                "additionalProperties": False,
                "properties": {
                    "key_id": _KEY_ID,
                    "name": {"type": "string"},
                    "status": {"type": "string", "const": "revoked"},
                    "issued_at": _TIME,
                    "revoked_at": _TIME,
                    **_ROLL_FIELDS,
                    "propagation": _ref("Propagation"),
                },
            },
            "Propagation": {
                "type": "object",
                "description": (
                    "A revocation's receipt, from the gateway processes' heartbeats"
                ),
                "required": ["sequence", "processes", "confirmed", "pending", "gone", "ms"],
                "additionalProperties": False,
                "properties": {
                    "sequence": {
                        "type": ["integer", "null"], "minimum": 1,
                        "description": "The revocation event's sequence; null when not "
                                       "numbered yet (a call without wait)",
                    },
                    "processes": {
                        "type": "integer", "minimum": 0,
                        "description": "Live gateway processes: a heartbeat within "
                                       "KEY_SERVICE_GATEWAY_GONE_AFTER seconds",
                    },
                    "confirmed": {
                        "type": "integer", "minimum": 0,
                        "description": "Live processes that have applied the event: from "
                                       "then on each refuses the key",
                    },
                    "pending": {
                        "type": "array", "items": _ref("GatewayProcess"),
                        "description": "Live processes that have not confirmed yet",
                    },
                    "gone": {
                        "type": "array", "items": _ref("GatewayProcess"),
                        "description": "Processes heard of in the last hour but not within "
                                       "the bound: neither counted nor confirmed",
                    },
                    "ms": {
                        "type": "integer", "minimum": 0,
                        "description": "Milliseconds from the call's start to this receipt",
                    },
                },
            },
            "GatewayProcess": {
                "type": "object",
                "required": ["instance_id", "name", "applied_sequence", "last_heartbeat"],
                "additionalProperties": False,
                "properties": {
                    "instance_id": {"type": "string", "pattern": "^[0-9a-f]{16,32}$"},
                    "name": {"type": "string", "description": "host:pid, or as configured"},
                    "applied_sequence": {
                        "type": "integer", "minimum": 0,
                        "description": "Its watermark: every event up to this one is applied "
                                       "there",
                    },
                    "last_heartbeat": _TIME,
                },
            },
            "KeyList": {
                "type": "object",
                "required": ["items", "next_cursor"],
                "additionalProperties": False,
                "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Key"}},
                    "next_cursor": {"type": ["string", "null"]},
                },
            },
            "AuditEntry": {
                "type": "object",
                "required": ["id", "at", "actor", "actor_type", "actor_token_id", "action",
                             "key_id", "token_id", "client_address", "request_id"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "integer"},
                    "at": _TIME,
                    "actor": {
                        "type": "string",
                        "description": "Who: a person's username, a token's name, or "
                                       "key_service (a scheduled revocation)",
                    },
                    "actor_type": {"type": "string", "enum": ["user", "token", "system"]},
                    "actor_token_id": {
                        "type": ["string", "null"], "format": "uuid",
                        "description": "The management token that acted, when it was one",
                    },
                    "action": {"type": "string", "enum": list(ACTIONS)},
                    "key_id": {"type": ["string", "null"], "format": "uuid",
                               "description": "The key acted on (key.* actions)"},
                    "token_id": {"type": ["string", "null"], "format": "uuid",
                                 "description": "The token acted on (token.* actions)"},
                    "client_address": {"type": ["string", "null"]},
                    "request_id": {"type": ["string", "null"]},
                },
            },
            "AuditList": {
                "type": "object",
                "required": ["items", "next_cursor"],
                "additionalProperties": False,
                "properties": {
                    "items": {"type": "array",
                              "items": {"$ref": "#/components/schemas/AuditEntry"}},
                    "next_cursor": {"type": ["string", "null"]},
                },
            },
            "EventPage": {
                "type": "object",
                "required": ["events", "last_sequence"],
                "additionalProperties": False,
                "properties": {
                    "events": {"type": "array", "items": _ref("SignedEvent")},
                    "last_sequence": {
                        "type": "integer", "minimum": 0,
                        "description": "The highest sequence assigned so far (0: none yet)",
                    },
                },
            },
            "SignedEvent": {
                "type": "object",
                "required": ["body", "signature", "signing_key"],
                "additionalProperties": False,
                "properties": {
                    "body": {
                        "type": "string",
                        "description": "The event (CloudEvents 1.0, structured JSON mode) as "
                                       "the exact text that was signed: verify it as it is",
                    },
                    "signature": {
                        "type": "string", "pattern": "^[A-Za-z0-9+/]{86}==$",
                        "description": "Ed25519 signature of the body's bytes, standard base64 "
                                       "with padding",
                    },
                    "signing_key": {
                        "type": "string", "pattern": "^[0-9a-f]{16}$",
                        "description": "The fingerprint of the key that signed it",
                    },
                },
            },
            "VerifyKeys": {
                "type": "object",
                "required": ["keys"],
                "additionalProperties": False,
                "properties": {
                    "keys": {"type": "array", "minItems": 1, "items": _ref("VerifyKey")},
                },
            },
            "VerifyKey": {
                "type": "object",
                "required": ["fingerprint", "public_key", "algorithm", "current"],
                "additionalProperties": False,
                "properties": {
                    "fingerprint": {
                        "type": "string", "pattern": "^[0-9a-f]{16}$",
                        "description": "The first 16 lowercase hex characters of the SHA-256 of "
                                       "the raw 32-byte key: what `x-signing-key` names",
                    },
                    "public_key": {
                        "type": "string", "pattern": "^[A-Za-z0-9+/]{43}=$",
                        "description": "The raw 32-byte Ed25519 public key, standard base64 "
                                       "(RFC 4648 section 4) with padding",
                    },
                    "algorithm": {"type": "string", "const": "Ed25519"},
                    "current": {"type": "boolean",
                                "description": "Whether key_service signs new events with it"},
                },
            },
            "NewToken": {
                "type": "object",
                "required": ["name", "scopes"],
                "properties": {
                    "name": _NAME,
                    "scopes": {
                        "type": "array", "minItems": 1, "uniqueItems": True,
                        "items": {"type": "string", "enum": list(SCOPES)},
                        "description": "; ".join(f"{k}: {v}" for k, v in SCOPE_HELP.items()),
                    },
                },
            },
            "Token": {
                "type": "object",
                "required": ["token_id", "name", "scopes", "status", "created_at",
                             "revoked_at"],
                "additionalProperties": False,
                "properties": {
                    "token_id": _TOKEN_ID,
                    "name": {"type": "string"},
                    "scopes": {"type": "array",
                               "items": {"type": "string", "enum": list(SCOPES)}},
                    "status": {"type": "string", "enum": ["active", "revoked"]},
                    "created_at": _TIME,
                    "revoked_at": {"type": ["string", "null"], "format": "date-time",
                                   "description": "null while the token is active"},
                },
            },
            "CreatedToken": {
                "type": "object",
                "required": ["token_id", "name", "scopes", "status", "created_at",
                             "revoked_at", "token"],
                "additionalProperties": False,
                "properties": {
                    "token_id": _TOKEN_ID,
                    "name": {"type": "string"},
                    "scopes": {"type": "array",
                               "items": {"type": "string", "enum": list(SCOPES)}},
                    "status": {"type": "string", "const": "active"},
                    "created_at": _TIME,
                    "revoked_at": {"type": "null"},
                    "token": {
                        "type": "string", "pattern": f"^{TOKEN_PATTERN}$",
                        "description": "The token, shown this once and never again; send it "
                                       "as Authorization: Bearer <token>",
                    },
                },
            },
            "TokenList": {
                "type": "object",
                "required": ["items", "next_cursor"],
                "additionalProperties": False,
                "properties": {
                    "items": {"type": "array", "items": _ref("Token")},
                    "next_cursor": {"type": ["string", "null"]},
                },
            },
            "Problem": {
                "type": "object",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "field": {"type": "string", "description": "The input field at fault"},
                },
            },
        },
        "responses": {
            "BadRequest": _problem("Malformed input; `field` names the input at fault"),
            "Unauthorized": _problem(
                "No valid session (or wrong username or password), or a management token "
                "that is malformed, unknown or revoked"
            ),
            "Forbidden": _problem(
                "Not a system_administrator, a missing or wrong CSRF token, a management "
                "token without the operation's scope (named in detail), or a management "
                "token on /api/v1/tokens"
            ),
            "NotFound": _problem("No key with this ID (or not a key ID at all)"),
            "Conflict": _problem("The key is already revoked"),
            "TooLarge": _problem(f"The body is over {API_BODY_LIMIT} bytes"),
            "UnsupportedMediaType": _problem("The body is not application/json"),
            "TooManyRequests": {
                **_problem("Too many failed logins"),
                "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
            },
            "Unavailable": _problem("The database is not available"),
        },
    },
}


async def openapi(_request: web.Request) -> web.Response:
    """``GET /api/v1/openapi.json``."""
    return web.json_response(OPENAPI)


def add_openapi_route(app: web.Application) -> None:
    """Register ``/api/v1/openapi.json``."""
    app.router.add_get("/api/v1/openapi.json", openapi)
