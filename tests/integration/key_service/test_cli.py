"""``python -m key_service`` as a user runs it: help, secrets, migrate, users, refusing to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apikeys_shared.config import Env, load_secrets
from tests.support.procs import ROOT

COMMANDS = ["serve", "migrate", "create-admin", "create-user", "keys", "audit", "generate-secrets"]
PASSWORD = "a long enough password"


def run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the command line with only ``env`` (plus PATH) as its environment."""
    return subprocess.run(
        [sys.executable, "-m", "key_service", *args], input=stdin, capture_output=True,
        text=True, timeout=60, cwd=ROOT, env={"PATH": os.environ.get("PATH", ""), **env},
    )


def _parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def test_help_on_every_command() -> None:
    top = run(["--help"], {})
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
        result = run([command, "--help"], {})
        assert result.returncode == 0, result.stderr
        assert f"python -m key_service {command}" in result.stdout


def test_generate_secrets_prints_a_loadable_env_file() -> None:
    first = run(["generate-secrets"], {})
    second = run(["generate-secrets"], {})
    assert first.returncode == 0
    values = _parse_env(first.stdout)
    assert set(values) == {
        "APIKEYS_PEPPERS", "APIKEYS_SIGNING_KEY", "APIKEYS_VERIFY_KEYS", "APIKEYS_INTERNAL_TOKEN",
    }
    secrets = load_secrets(Env(values), signer=True, verifier=True)
    assert secrets.signer is not None
    assert secrets.verifier is not None
    assert secrets.signer.key_id in secrets.verifier.key_ids
    assert _parse_env(second.stdout) != values


@pytest.mark.parametrize(
    "missing", ["APIKEYS_PEPPERS", "APIKEYS_SIGNING_KEY", "APIKEYS_INTERNAL_TOKEN"]
)
def test_serve_refuses_to_start_without_a_secret_and_names_it(
    missing: str, secrets_env: dict[str, str], tmp_path: Path,
) -> None:
    env = {k: v for k, v in secrets_env.items() if k != missing}
    env["KEY_SERVICE_DATA_DIR"] = str(tmp_path)
    result = run(["serve", "--port", "1"], env)
    assert result.returncode != 0
    assert missing in result.stderr
    # No secret is echoed back in the error.
    for name, value in secrets_env.items():
        assert value not in result.stderr, name
    assert not (tmp_path / "keys.db").exists()


def test_serve_rejects_a_malformed_setting(secrets_env: dict[str, str], tmp_path: Path) -> None:
    env = {**secrets_env, "KEY_SERVICE_DATA_DIR": str(tmp_path),
           "KEY_SERVICE_DATABASE_URL": "mysql://db/keys"}
    result = run(["serve"], env)
    assert result.returncode != 0
    assert "KEY_SERVICE_DATABASE_URL" in result.stderr


def test_create_admin_and_user(tmp_path: Path) -> None:
    # The default database: a SQLite file under the data directory (create_user itself is
    # tested on both databases in-process; this tests the command around it).
    env = {"KEY_SERVICE_DATA_DIR": str(tmp_path)}
    ok = run(["create-admin", "--username", "root", "--password-stdin"], env, PASSWORD + "\n")
    assert ok.returncode == 0, ok.stderr
    assert PASSWORD not in ok.stdout + ok.stderr
    again = run(["create-admin", "--username", "root", "--password-stdin"], env, PASSWORD + "\n")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    short = run(["create-admin", "--username", "other", "--password-stdin"], env, "elevenchars\n")
    assert short.returncode == 1
    assert "at least 12 characters" in short.stderr
    viewer = run(
        ["create-user", "--username", "reader", "--role", "viewer", "--password-stdin"],
        env, PASSWORD + "\n",
    )
    assert viewer.returncode == 0, viewer.stderr
    bad_role = run(
        ["create-user", "--username", "x", "--role", "god", "--password-stdin"], env, PASSWORD,
    )
    assert bad_role.returncode == 2
    assert "invalid choice" in bad_role.stderr
    migrate = run(["migrate"], env)
    assert migrate.returncode == 0, migrate.stderr
    assert (tmp_path / "keys.db").is_file()


def test_create_admin_needs_password_stdin(tmp_path: Path) -> None:
    result = run(["create-admin", "--username", "root"], {"KEY_SERVICE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "--password-stdin" in result.stderr
