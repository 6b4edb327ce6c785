"""The OpenAPI 3.1 document of the JSON API, served at ``/api/v1/openapi.json``.

Kept beside the handlers and checked against them by a schemathesis run in the test suite.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .auth import CSRF_HEADER, SESSION_COOKIE
from .keys import DEFAULT_LIMIT, MAX_LIMIT, MAX_NAME_LENGTH
from .middleware import API_BODY_LIMIT

__all__ = ["OPENAPI", "add_openapi_route"]

_TIME = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
_KEY_ID = {
    "type": "string", "format": "uuid", "minLength": 36, "maxLength": 36,
    "description": "A lowercase UUID (36 characters); not secret",
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


_READ: list[dict[str, list[str]]] = [{"sessionCookie": []}]
_WRITE: list[dict[str, list[str]]] = [{"sessionCookie": [], "csrfToken": []}]
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

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "key_service API",
        "version": "1.0.0",
        "description": (
            "Issue, list and revoke API keys for the Backoffice API. Only users with the "
            "system_administrator role may use /api/v1/keys and /api/v1/audit (others get 403; "
            "without a session 401). Log in with POST /api/v1/session; it sets the "
            f"`{SESSION_COOKIE}` cookie and returns a CSRF token that every POST, PUT, PATCH and "
            f"DELETE must send as `{CSRF_HEADER}`. Request bodies are limited to "
            f"{API_BODY_LIMIT} bytes. Errors are RFC 9457 problem details."
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
                    **_errors("400", "401", "413", "415", "429"),
                },
            },
            "get": {
                "operationId": "showSession",
                "summary": "Who is logged in, with the session's CSRF token",
                "security": _READ,
                "responses": {"200": _json("Session", "The session"), **_errors("401")},
            },
            "delete": {
                "operationId": "logout",
                "summary": "Log out",
                "security": _WRITE,
                "responses": {"204": {"description": "Logged out"}, **_errors("401", "403")},
            },
        },
        "/api/v1/keys": {
            "get": {
                "operationId": "listKeys",
                "summary": "List keys: active newest first, then revoked, latest revoked last",
                "security": _READ,
                "parameters": _PAGING,
                "responses": {"200": _json("KeyList", "One page of keys"),
                              **_errors("400", "401", "403")},
            },
            "post": {
                "operationId": "issueKey",
                "summary": "Issue a key; the only response that ever contains its secret",
                "security": _WRITE,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewKey")}},
                },
                "responses": {
                    "201": _json("IssuedKey", "Issued", headers={
                        "Location": {"schema": {"type": "string"}},
                        "Cache-Control": {"schema": {"type": "string", "const": "no-store"}},
                    }),
                    **_errors("400", "401", "403", "413", "415"),
                },
            },
        },
        "/api/v1/keys/{key_id}": {
            "parameters": [_KEY_PATH_PARAM],
            "get": {
                "operationId": "getKey",
                "summary": "One key",
                "security": _READ,
                "responses": {"200": _json("Key", "The key"), **_errors("401", "403", "404")},
            },
        },
        "/api/v1/keys/{key_id}/revoke": {
            "parameters": [_KEY_PATH_PARAM],
            "post": {
                "operationId": "revokeKey",
                "summary": "Revoke a key (permanent)",
                "security": _WRITE,
                "responses": {
                    "200": _json("Key", "Revoked"),
                    **_errors("401", "403", "404", "409"),
                },
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
                "summary": "Audit rows of issues and revokes, newest first",
                "security": _READ,
                "parameters": _PAGING,
                "responses": {"200": _json("AuditList", "One page of audit rows"),
                              **_errors("400", "401", "403")},
            },
        },
    },
    "components": {
        "securitySchemes": {
            "sessionCookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            "csrfToken": {"type": "apiKey", "in": "header", "name": CSRF_HEADER},
        },
        "schemas": {
            "Login": {
                "type": "object",
                "required": ["username", "password"],
                "properties": {
                    "username": {"type": "string", "minLength": 1, "maxLength": 64},
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
                "properties": {
                    "name": {
                        "type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH,
                        "pattern": r"\S",
                        "description": (
                            f"1-{MAX_NAME_LENGTH} printable characters after trimming "
                            "white space; duplicates are allowed"
                        ),
                    },
                },
            },
            "Key": {
                "type": "object",
                "required": ["key_id", "name", "status", "issued_at", "revoked_at"],
                "additionalProperties": False,
                "properties": {
                    "key_id": _KEY_ID,
                    "name": {"type": "string"},
                    "status": {"type": "string", "enum": ["active", "revoked"]},
                    "issued_at": _TIME,
                    "revoked_at": {"oneOf": [_TIME, {"type": "null"}],
                                   "description": "null while the key is active"},
                },
            },
            "IssuedKey": {
                "type": "object",
                "required": ["key_id", "name", "status", "issued_at", "revoked_at", "secret"],
                "additionalProperties": False,
                "properties": {
                    "key_id": _KEY_ID,
                    "name": {"type": "string"},
                    "status": {"type": "string", "const": "active"},
                    "issued_at": _TIME,
                    "revoked_at": {"type": "null"},
                    "secret": {
                        "type": "string", "pattern": "^[0-9A-Za-z]{64}$",
                        "description": "The key secret, shown this once and never again",
                    },
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
                "required": ["id", "at", "actor", "action", "key_id", "client_address",
                             "request_id"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "integer"},
                    "at": _TIME,
                    "actor": {"type": "string"},
                    "action": {"type": "string", "enum": ["key.issued", "key.revoked"]},
                    "key_id": _KEY_ID,
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
            "Unauthorized": _problem("No valid session (or wrong username or password)"),
            "Forbidden": _problem("Not a system_administrator, or a missing or wrong CSRF token"),
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
