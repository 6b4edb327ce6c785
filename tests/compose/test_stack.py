"""The whole stack in containers, run from compose.yaml as a platform team would run it.

On this machine kind the engine is Debian's podman with podman-compose, and the pinned official
images are replaced by stand-ins built from Debian's packages (tests/compose/standins/,
CONTRACT.md there); docs/compose-testing.md says what that proves and what it does not. The
project's own images are built from deploy/Dockerfile by compose, as `up --build` does.

The run: `make secrets` → the services started in the order of their depends_on conditions,
each healthy → the admin made with the README's `compose exec` → a key issued through the
published key_service port → 200 through the published load balancer → revoked → 401 from every
gateway replica → `--scale gateway=4`: the new replicas refuse the revoked key and accept a new
one → the nginx forward-auth profile → key_service and RabbitMQ restarted: the feed's sequence
has no gap, the revoked keys stay refused, a key revoked after the restarts reaches every replica
→ down and `make up` on the same volumes: every key and the admin are still there → `make down`,
then down -v, and nothing of the project is left.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from apikeys_shared.events import SignedEvent
from apikeys_shared.signing import Verifier
from tests.compose.engine import Engine, exclusive, prepare
from tests.compose.stack import Container, Stack, free_ports, free_subnet, health_checks, sweep
from tests.compose.standins import build_standins
from tests.compose.steps import Steps
from tests.support.procs import ROOT

pytestmark = [pytest.mark.slow]

# The virtualenv running the tests: podman-compose is in it, and `make` uses it as VENV.
VENV = Path(sys.prefix)

ADMIN = "admin"
ADMIN_PASSWORD = "compose test admin password"
SECRETS = ("APIKEYS_PEPPERS", "APIKEYS_SIGNING_KEY", "APIKEYS_VERIFY_KEYS",
           "APIKEYS_INTERNAL_TOKEN", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "REDIS_PASSWORD")
PROJECT_IMAGES = ("apikeys/key_service:local", "apikeys/auth_gateway:local",
                  "apikeys/demo_backend:local")
# A request to the gateway replica itself, from inside its container; the credentials come on
# standard input, never on a command line. 0 for no answer (the machine is shared and may be
# slow): the caller asks again.
_PROBE = """\
import json, sys, urllib.error, urllib.request
request = urllib.request.Request("http://127.0.0.1:8080/orders", headers=json.load(sys.stdin))
try:
    print(urllib.request.urlopen(request, timeout=20).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except OSError:
    print(0)
"""


@pytest.fixture
def steps(capsys: pytest.CaptureFixture[str]) -> Steps:
    def write(line: str) -> None:
        with capsys.disabled():
            print(line, flush=True)
    return Steps(write)


@pytest.fixture
def engine(steps: Steps) -> Iterator[Engine]:
    """The test's podman, held by this run alone, with nothing left of killed runs."""
    with exclusive():
        engine = prepare(VENV / "bin")
        steps.note(f"engine: {engine.versions()}")
        stale = sweep(engine)
        if stale:
            steps.note(f"removed what killed runs left: {stale}")
        yield engine


def _eventually(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``check`` until it holds (a bound for a slow machine, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.25)


def _credentials(key: dict[str, Any]) -> dict[str, str]:
    return {"X-AuthenticationKeyId": key["key_id"], "X-AuthenticationKeyValue": key["secret"]}


# How long the container takes to look up the database's name; 99 when it did not answer.
_LOOKUP = """\
import socket, time
started = time.monotonic()
try:
    socket.getaddrinfo("postgres", 5432)
except OSError:
    print(99)
else:
    print(time.monotonic() - started)
"""


def _names_resolve(stack: Stack, container: Container) -> bool:
    return float(stack.exec_in(container, "python", "-c", _LOOKUP).strip()) < 1


def _replica_status(stack: Stack, replica: Container, key: dict[str, Any]) -> int:
    return int(stack.exec_in(replica, "python", "-c", _PROBE,
                             stdin=json.dumps(_credentials(key))).strip())


def _every_replica(stack: Stack, key: dict[str, Any], status: int, replicas: int) -> None:
    gateways = [c for c in stack.containers("gateway") if c.state == "running"]
    assert len(gateways) == replicas, [c.name for c in gateways]
    for replica in gateways:
        _eventually(lambda r=replica: _replica_status(stack, r, key) == status,  # type: ignore[misc]
                    f"{replica.name} answers {status} for {key['name']}")


class Backoffice:
    """The admin's session on key_service's published port."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        response = self.http.post(f"{url}/api/v1/session",
                                  json={"username": ADMIN, "password": ADMIN_PASSWORD}, timeout=30)
        assert response.status_code == 200, response.text
        self.http.headers["X-CSRF-Token"] = response.json()["csrf_token"]

    def issue(self, name: str) -> dict[str, Any]:
        response = self.http.post(f"{self.url}/api/v1/keys", json={"name": name}, timeout=30)
        assert response.status_code == 201, response.text
        key: dict[str, Any] = response.json()
        return key

    def revoke(self, key: dict[str, Any]) -> None:
        response = self.http.post(f"{self.url}/api/v1/keys/{key['key_id']}/revoke", timeout=30)
        assert response.status_code == 200, response.text

    def keys(self) -> dict[str, str]:
        """``{key_id: status}`` of every key."""
        response = self.http.get(f"{self.url}/api/v1/keys", timeout=30)
        assert response.status_code == 200, response.text
        return {item["key_id"]: item["status"] for item in response.json()["items"]}


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=10).status_code == 200
    except requests.RequestException:
        return False


def _status(url: str, key: dict[str, Any] | None) -> int:
    headers = _credentials(key) if key is not None else {}
    return requests.get(url, headers=headers, timeout=30).status_code


def _feed(url: str, env: dict[str, str]) -> list[tuple[int, str, str]]:
    """``(sequence, type, key_id)`` of every event of the feed, each signature verified."""
    response = requests.get(f"{url}/internal/v1/events", params={"after": "0", "limit": "1000"},
                            headers={"Authorization": f"Bearer {env['APIKEYS_INTERNAL_TOKEN']}"},
                            timeout=30)
    assert response.status_code == 200, response.text
    verifier = Verifier.from_base64(env["APIKEYS_VERIFY_KEYS"].split(","))
    events = [SignedEvent.from_json(item).verify(verifier) for item in response.json()["events"]]
    return [(e.sequence, e.type, e.record.key_id) for e in events]


def _read_env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _assert_images_hold_no_secret(engine: Engine, secrets: dict[str, str]) -> None:
    for image in PROJECT_IMAGES:
        config = engine.inspect(image, kind="image")[0]["Config"]
        user = str(config.get("User") or "")
        assert user, f"{image} names no user: it would run as root"
        assert user.split(":")[0] not in ("0", "root"), f"{image} runs as {user!r}"
        history = engine.podman("image", "history", "--no-trunc", "--format", "{{.CreatedBy}}",
                                image).stdout
        shown = json.dumps(config) + history
        for name, value in secrets.items():
            assert value not in shown, f"{image} holds the value of {name}"
            assert name not in shown, f"{image} names {name}"


def test_the_stack_runs_from_compose_yaml(engine: Engine, steps: Steps, tmp_path: Path) -> None:
    with steps.step("stand-in images ready (built, or cached from an earlier run)"):
        images = build_standins(engine, steps.note)
    key_port, gateway_port, nginx_port = free_ports(3)
    subnet = free_subnet()
    hosts = list(subnet.hosts())
    dynamic = f"{hosts[127]}/25"
    files = ["compose.yaml"]
    if engine.podman_version() < (4, 5):
        files.append("deploy/compose.podman-dns.yaml")
    env = {
        **images,
        "KEY_SERVICE_PUBLISH_PORT": str(key_port), "GATEWAY_PUBLISH_PORT": str(gateway_port),
        "NGINX_PUBLISH_PORT": str(nginx_port), "APIKEYS_SUBNET": str(subnet),
        "APIKEYS_NETWORK_DNS": str(hosts[0]), "GATEWAY_LB_ADDRESS": str(hosts[9]),
        "NGINX_ADDRESS": str(hosts[10]), "APIKEYS_DYNAMIC_RANGE": dynamic,
        "GATEWAY_METRICS_ALLOW": dynamic, "KEY_SERVICE_METRICS_ALLOW": dynamic,
    }
    stack = Stack(engine, ROOT, tmp_path / "checkout", env, tuple(files))
    steps.note(f"project {stack.name}: network {subnet}, key_service 127.0.0.1:{key_port}, "
               f"gateway_lb 127.0.0.1:{gateway_port}, nginx 127.0.0.1:{nginx_port}, "
               f"compose files {' '.join(files)}")
    key_service = f"http://127.0.0.1:{key_port}"
    lb = f"http://127.0.0.1:{gateway_port}/orders"
    front = f"http://127.0.0.1:{nginx_port}/orders"
    try:
        with health_checks(engine, stack.name) as checks:
            _run(stack, steps, key_service, lb, front)
            steps.note(f"health checks run: {checks.runs}")
    finally:
        with steps.step("down -v: containers, volumes, network and pod removed"):
            stack.remove()
            assert stack.leftovers() == []
    steps.note(f"total {steps.total():.0f} s")


def _run(stack: Stack, steps: Steps, key_service: str, lb: str, front: str) -> None:
    with steps.step("make secrets"):
        stack.make("secrets", VENV)
        secrets = _read_env(stack.directory / ".env")
        assert set(SECRETS) <= set(secrets)
    with steps.step("podman-compose build (the project's three images, deploy/Dockerfile)"):
        stack.compose("build")
        _assert_images_hold_no_secret(stack.engine, secrets)

    services = stack.services()
    assert services["gateway"]["deploy"]["replicas"] == 2
    default = {name: spec for name, spec in services.items() if not spec.get("profiles")}
    with steps.step("up in the order of the depends_on conditions, every service healthy"):
        for wave, took in stack.up_in_order(default):
            steps.note(f"  healthy: {', '.join(wave)} ({took:.1f} s)")
    assert len(stack.containers("gateway")) == 2

    with steps.step("the stack's DNS answers again (aardvark-dns 1.4 stalls as containers join)"):
        # docs/compose-testing.md: lookups stall for seconds after containers join the network;
        # the services retry, but a one-off command such as create-admin fails its connect.
        [key_service_container] = stack.containers("key_service")
        _eventually(lambda: _names_resolve(stack, key_service_container),
                    "key_service looks up postgres within a second", timeout=120)
    with steps.step("create-admin with `compose exec -T ... --password-stdin < file`"):
        password_file = stack.directory / "admin-password.txt"
        password_file.write_text(ADMIN_PASSWORD + "\n")
        password_file.chmod(0o600)
        stack.compose("exec", "-T", "key_service", "python", "-m", "key_service",
                      "create-admin", "--username", ADMIN, "--password-stdin",
                      stdin=password_file)
    office = Backoffice(key_service)

    with steps.step("a key issued through key_service's published port: 200 through the lb"):
        first = office.issue("compose first")
        _eventually(lambda: _status(lb, first) == 200, "the first key passes the lb")
        assert _status(lb, None) == 401
        assert _status(lb, {**first, "secret": first["secret"][:-1] + "0"}) == 401
    with steps.step("revoked: 401 from every gateway replica and through the lb"):
        office.revoke(first)
        _every_replica(stack, first, 401, replicas=2)
        assert _status(lb, first) == 401

    with steps.step("up -d --scale gateway=4: the new replicas healthy"):
        stack.compose("up", "-d", "--scale", "gateway=4")
        stack.wait_healthy(["gateway"])
    with steps.step("the four replicas refuse the revoked key and accept a new one"):
        second = office.issue("compose second")
        _every_replica(stack, first, 401, replicas=4)
        _every_replica(stack, second, 200, replicas=4)
        _eventually(lambda: _status(lb, second) == 200, "the second key passes the lb")

    with steps.step("--profile nginx up -d: the forward-auth front"):
        # podman-compose keeps the replicas that --scale added (Docker Compose would go back
        # to `replicas: 2` here): the later checks ask every replica that runs.
        stack.compose("--profile", "nginx", "up", "-d")
        stack.wait_healthy(["nginx"])
        _eventually(lambda: _status(front, second) == 200, "the second key passes nginx")
        assert _status(front, first) == 401
        assert _status(front, None) == 401

    feed_before = _feed(key_service, secrets)
    with steps.step("key_service and rabbitmq restarted, healthy again"):
        for service in ("key_service", "rabbitmq"):
            for container in stack.containers(service):
                stack.engine.podman("restart", "--time", "20", container.id)
        stack.wait_healthy(["rabbitmq", "key_service"])
        # podman may still show the health from before the restart: ask key_service itself.
        _eventually(lambda: _ready(key_service), "key_service is ready after its restart")
    with steps.step("nothing lost: the feed has no gap, a key revoked now reaches every replica"):
        third = office.issue("compose third")
        _every_replica(stack, third, 200, replicas=4)
        office.revoke(third)
        _every_replica(stack, third, 401, replicas=4)
        _every_replica(stack, first, 401, replicas=4)
        feed = _feed(key_service, secrets)
        assert feed[:len(feed_before)] == feed_before
        assert [sequence for sequence, _, _ in feed] == list(range(1, len(feed) + 1))
        assert [(kind, key_id) for _, kind, key_id in feed] == [
            ("apikey.issued", first["key_id"]), ("apikey.revoked", first["key_id"]),
            ("apikey.issued", second["key_id"]), ("apikey.issued", third["key_id"]),
            ("apikey.revoked", third["key_id"]),
        ]

    with steps.step("make down (volumes kept)"):
        stack.make("down", VENV)
        assert stack.containers() == []
    with steps.step("make up: every service at once (podman-compose ignores the conditions "
                    "on this podman), all healthy"):
        stack.make("up", VENV)
        stack.wait_healthy(sorted(default), timeout=360)
    with steps.step("every key and the admin kept on the volumes"):
        office = Backoffice(key_service)
        assert office.keys() == {first["key_id"]: "revoked", second["key_id"]: "active",
                                 third["key_id"]: "revoked"}
        _eventually(lambda: _status(lb, second) == 200, "the second key passes the lb")
        assert _status(lb, first) == 401
        assert _status(lb, third) == 401
        assert _feed(key_service, secrets) == feed
