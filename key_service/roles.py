"""User roles and password rules (a light module: the command line's help needs only these)."""

from __future__ import annotations

__all__ = ["ADMIN_ROLE", "MAX_PASSWORD_LENGTH", "MIN_PASSWORD_LENGTH", "ROLES", "VIEWER_ROLE"]

ADMIN_ROLE = "system_administrator"
VIEWER_ROLE = "viewer"
ROLES = (ADMIN_ROLE, VIEWER_ROLE)
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
