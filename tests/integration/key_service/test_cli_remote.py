"""``python -m key_service keys ... | audit`` against a real key_service (``serve`` on a port):
every command, ``--json``, and each exit status (0 done, 1 refused, 2 usage, 3 unreachable)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from apikeys_shared.keys import find_secrets, is_valid_key_id
from key_service.db import create_engine, make_sessionmaker, migrate_async
from key_service.tokenformat import find_tokens
from key_service.users import ADMIN_ROLE, create_user
from tests.conftest import AmqpNames
from tests.support.procs import ROOT, ServiceProcess, free_port, wait_http

PASSWORD = "command line password"
REMOTE = ["keys", "audit"]


@dataclass
class Served:
    """A running key_service, and a management token of each kind for it."""

    url: str
    process: ServiceProcess
    tokens: dict[str, str]  # "all", "read": the token texts

    def run(self, *args: str, who: str = "all", **env: str) -> subprocess.CompletedProcess[str]:
        """Run the command line with APIKEYS_URL and APIKEYS_TOKEN (of ``who``, or ``who`` as
        the token's text) set; ``env`` overrides."""
        base = {"APIKEYS_URL": self.url, "APIKEYS_TOKEN": self.tokens.get(who, who)}
        return run_cli(list(args), {**base, **env})


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m key_service ARGS`` with only ``env`` (plus PATH) as its environment."""
    return subprocess.run(
        [sys.executable, "-m", "key_service", *args], capture_output=True, text=True,
        timeout=60, cwd=ROOT, env={"PATH": os.environ.get("PATH", ""), **env}, check=False,
    )


async def _prepare(url: str) -> None:
    await migrate_async(url)
    engine = create_engine(url)
    try:
        await create_user(make_sessionmaker(engine), "ada", PASSWORD, ADMIN_ROLE)
    finally:
        await engine.dispose()


@pytest.fixture
def served(secrets_env: dict[str, str], tmp_path: Path, amqp_names: AmqpNames) -> Iterator[Served]:
    """key_service serving on a free port, an administrator, and two tokens made by her."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    asyncio.run(_prepare(url))
    port = free_port()
    env = {**secrets_env, "KEY_SERVICE_DATABASE_URL": url, "KEY_SERVICE_PORT": str(port),
           "KEY_SERVICE_DATA_DIR": str(tmp_path), "APIKEYS_EXCHANGE": amqp_names.exchange}
    process = ServiceProcess(["-m", "key_service", "serve"], env, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/readyz")
        with requests.Session() as http:
            me = http.post(f"{base}/api/v1/session",
                           json={"username": "ada", "password": PASSWORD}, timeout=10).json()
            tokens = {}
            for label, scopes in [("all", ["keys:read", "keys:write", "audit:read"]),
                                  ("read", ["keys:read"])]:
                resp = http.post(f"{base}/api/v1/tokens", timeout=10,
                                 json={"name": f"cli {label}", "scopes": scopes},
                                 headers={"X-CSRF-Token": me["csrf_token"]})
                assert resp.status_code == 201, resp.text
                tokens[label] = resp.json()["token"]
        yield Served(base, process, tokens)
    finally:
        process.stop()
    log = process.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert not [t for t in tokens.values() if t in log]
    assert list(find_secrets(log)) == []


def _no_secrets_in(text: str) -> None:
    assert list(find_secrets(text)) == []
    assert list(find_tokens(text)) == []


def test_help_answers_at_once_without_the_web_app() -> None:
    for args in (["keys", "--help"], ["keys", "roll", "--help"], ["audit", "--help"]):
        result = run_cli(args, {})
        assert result.returncode == 0, result.stderr
        assert "python -m key_service" in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from key_service.cli import main\n"
         "try:\n    main(['keys', 'list', '--help'])\nexcept SystemExit:\n    pass\n"
         "print(sorted(m for m in sys.modules if m.split('.')[0] in "
         "('aiohttp', 'sqlalchemy', 'alembic', 'aio_pika', 'key_service.app')))"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
    )
    assert probe.stdout.strip().splitlines()[-1] == "[]"


def test_issue_show_list_revoke_for_people_and_scripts(served: Served) -> None:
    issued = served.run("keys", "issue", "billing export")
    assert issued.returncode == 0, issued.stderr
    secret = next(s for _, s in find_secrets(issued.stdout))
    assert issued.stdout.count(secret) == 1
    assert "shown this once" in issued.stderr
    _no_secrets_in(issued.stderr)
    facts = dict(line.split(None, 1) for line in issued.stdout.splitlines()
                 if line.startswith(("Key", "Name", "Status")))
    key_id = facts["Key"].split()[-1]  # "Key ID  <id>"
    assert is_valid_key_id(key_id)

    as_json = served.run("keys", "issue", "second key", "--json")
    assert as_json.returncode == 0, as_json.stderr
    second = json.loads(as_json.stdout)
    assert second["name"] == "second key"
    assert [s for _, s in find_secrets(as_json.stdout)] == [second["secret"]]

    listed = served.run("keys", "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["KEY", "ID", "NAME", "STATUS", "ISSUED"]
    assert [line.split()[0] for line in lines[1:]] == [second["key_id"], key_id]
    _no_secrets_in(listed.stdout)
    listed_json = json.loads(served.run("keys", "list", "--json").stdout)
    assert [k["key_id"] for k in listed_json] == [second["key_id"], key_id]

    shown = served.run("keys", "show", key_id, who="read")
    assert shown.returncode == 0
    assert "billing export" in shown.stdout
    assert "active" in shown.stdout
    assert [line.split(None, 2)[2] for line in shown.stdout.splitlines()
            if line.startswith("Last used")] == ["never"]
    shown_json = json.loads(served.run("keys", "show", key_id, "--json").stdout)
    assert shown_json["key_id"] == key_id
    assert "secret" not in shown_json

    revoked = served.run("keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout
    again = served.run("keys", "revoke", key_id, "--json")
    assert again.returncode == 1
    assert again.stdout == ""
    assert "409" in again.stderr
    assert "already revoked" in again.stderr


def test_roll_with_an_overlap_and_the_audit_log(served: Served) -> None:
    old = json.loads(served.run("keys", "issue", "payments", "--json").stdout)
    rolled = served.run("keys", "roll", old["key_id"], "--overlap", "24h")
    assert rolled.returncode == 0, rolled.stderr
    secrets = [s for _, s in find_secrets(rolled.stdout)]
    assert len(secrets) == 1
    assert re.search(rf"^Replaces +{old['key_id']}$", rolled.stdout, re.MULTILINE)
    assert re.search(rf"^Old key +{old['key_id']} works until ", rolled.stdout, re.MULTILINE)
    assert "shown this once" in rolled.stderr

    again = served.run("keys", "roll", old["key_id"], "--overlap", "1h")
    assert again.returncode == 1
    assert "409" in again.stderr
    assert "rolled once" in again.stderr

    other = json.loads(served.run("keys", "issue", "other", "--json").stdout)
    too_long = served.run("keys", "roll", other["key_id"], "--overlap", "31d")
    assert too_long.returncode == 1
    assert "overlap_seconds" in too_long.stderr
    as_json = served.run("keys", "roll", other["key_id"], "--overlap", "1h30m", "--json")
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["replaces"] == other["key_id"]
    revokes = datetime.fromisoformat(body["replaced_key"]["revokes_at"])
    assert revokes - datetime.fromisoformat(body["issued_at"]) == timedelta(minutes=90)

    audit = served.run("audit", "--limit", "3")
    assert audit.returncode == 0, audit.stderr
    lines = audit.stdout.splitlines()
    assert lines[0].split() == ["AT", "WHO", "WHAT", "KEY", "OR", "TOKEN"]
    assert len(lines) == 4
    assert "cli all (token)" in lines[1]
    assert "rolled key" in lines[1]
    entries = json.loads(served.run("audit", "--json").stdout)
    assert [e["action"] for e in entries[:3]] == ["key.rolled", "key.issued", "key.issued"]
    assert {e["actor"] for e in entries if e["action"].startswith("key.")} == {"cli all"}
    assert entries[-1]["action"] == "token.created"
    assert entries[-1]["actor"] == "ada"


def test_refusals_exit_1_naming_the_problem(served: Served) -> None:
    unknown = served.run("keys", "show", "019ac5d2-7f3e-7b1a-9c4e-2d8f6a1b3c5d")
    assert unknown.returncode == 1
    assert "404" in unknown.stderr
    assert "no key with ID" in unknown.stderr
    no_scope = served.run("keys", "issue", "nope", who="read")
    assert no_scope.returncode == 1
    assert "keys:write" in no_scope.stderr
    no_audit = served.run("audit", who="read")
    assert no_audit.returncode == 1
    assert "audit:read" in no_audit.stderr
    bad_token = served.run("keys", "list", who="ksmt_not-a-real-token")
    assert bad_token.returncode == 1
    assert "401" in bad_token.stderr
    assert "ksmt_not-a-real-token" not in bad_token.stderr
    bad_name = served.run("keys", "issue", "   ")
    assert bad_name.returncode == 1
    assert "name" in bad_name.stderr
    assert json.loads(served.run("keys", "list", "--json").stdout) == []


def test_usage_errors_exit_2(served: Served, tmp_path: Path) -> None:
    no_url = run_cli(["keys", "list"], {"APIKEYS_TOKEN": served.tokens["all"]})
    assert no_url.returncode == 2
    assert "APIKEYS_URL" in no_url.stderr
    no_token = run_cli(["keys", "list"], {"APIKEYS_URL": served.url})
    assert no_token.returncode == 2
    assert "APIKEYS_TOKEN" in no_token.stderr
    bad_url = run_cli(["keys", "list", "--url", "ftp://example", "--token", "x"], {})
    assert bad_url.returncode == 2
    assert "http(s)" in bad_url.stderr
    for args in (["keys"], ["keys", "show"], ["keys", "roll", "x"],
                 ["keys", "roll", "x", "--overlap", "2x"], ["audit", "--limit", "0"],
                 ["keys", "frobnicate"]):
        result = served.run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "usage:" in result.stderr
    # Flags win over the environment.
    flags = run_cli(["keys", "list", "--url", served.url, "--token", served.tokens["read"]],
                    {"APIKEYS_URL": "http://127.0.0.1:1", "APIKEYS_TOKEN": "wrong"})
    assert flags.returncode == 0, flags.stderr


def test_unreachable_exits_3(served: Served) -> None:
    closed = served.run("keys", "list", APIKEYS_URL=f"http://127.0.0.1:{free_port()}")
    assert closed.returncode == 3
    assert "cannot reach" in closed.stderr
    not_json = served.run("keys", "list", APIKEYS_URL=served.url + "/backoffice/static/x")
    assert not_json.returncode == 1  # 404 from key_service: refused, not unreachable
    with _server(_Html) as other:
        result = served.run("keys", "list", APIKEYS_URL=other)
    assert result.returncode == 3
    assert "did not answer with JSON" in result.stderr


def test_a_redirect_is_not_followed_with_the_token(served: Served) -> None:
    _Recorder.seen.clear()
    with _server(_Recorder) as elsewhere:
        _Redirect.target = elsewhere
        with _server(_Redirect) as redirecting:
            result = served.run("keys", "list", APIKEYS_URL=redirecting)
    assert result.returncode == 3
    assert "redirect" in result.stderr
    assert _Recorder.seen == []  # the token never left for the other address


class _Html(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>not key_service</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Redirect(_Html):
    target = ""

    def do_GET(self) -> None:
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Recorder(_Html):
    seen: list[str] = []

    def do_GET(self) -> None:
        _Recorder.seen.append(self.headers.get("Authorization", ""))
        super().do_GET()


@contextmanager
def _server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A small HTTP server on a free port (in a thread); its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _heartbeat(served: Served, internal_token: str, instance_id: str, applied: int) -> None:
    """Post a gateway process's heartbeat, as a gateway does."""
    resp = requests.post(
        f"{served.url}/internal/v1/gateways/heartbeat", timeout=10,
        headers={"Authorization": f"Bearer {internal_token}"},
        json={"instance_id": instance_id, "name": "gw-a:17", "host": "gw-a", "pid": 17,
              "started_at": "2026-12-07T09:00:00.000000Z", "applied_sequence": applied},
    )
    assert resp.status_code == 200, resp.text


def test_revoke_with_wait_prints_the_receipt(
    served: Served, secrets_env: dict[str, str],
) -> None:
    token = secrets_env["APIKEYS_INTERNAL_TOKEN"]
    _heartbeat(served, token, "ab" * 8, 0)
    key_id = json.loads(served.run("keys", "issue", "watched", "--json").stdout)["key_id"]
    pending = served.run("keys", "revoke", key_id, "--wait", "0.5")
    assert pending.returncode == 4, pending.stderr
    assert "Refused at 0 of 1 gateway process after" in pending.stdout
    assert "not confirmed yet: gw-a:17" in pending.stdout

    _heartbeat(served, token, "ab" * 8, 10**6)
    again = served.run("keys", "revoke", key_id, "--wait", "5", "--json")
    assert again.returncode == 1
    assert "already revoked" in again.stderr
    receipt = json.loads(again.stdout)["propagation"]
    assert receipt["processes"] == receipt["confirmed"] == 1

    other = json.loads(served.run("keys", "issue", "second", "--json").stdout)["key_id"]
    done = served.run("keys", "revoke", other, "--wait", "5")
    assert done.returncode == 0, done.stderr
    assert "Refused at the one gateway process after" in done.stdout
    bad = served.run("keys", "revoke", other, "--wait", "31")
    assert bad.returncode == 2
    assert "at most 30" in bad.stderr
