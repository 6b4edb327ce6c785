"""compose.yaml, checked structurally (there may be no Docker engine where the suite runs).

It parses; every service is built from a Dockerfile target that exists or runs a pinned image;
every variable a service reads is set in its environment or documented in its env file; the
services' own ``load_config`` accepts the environment compose would give them; healthchecks and
``depends_on`` conditions are there; no secret value is written in any file of the stack. Where the
``docker compose`` plugin is installed, ``docker compose config`` must accept the file as well.

Every test runs twice: on compose.yaml alone, and with the highly available shape of
deploy/compose.ha.yaml on top (``docker compose -f compose.yaml -f deploy/compose.ha.yaml``),
whose failures the native failover tests in tests/failover show.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from apikeys_shared.rabbitmq_url import parse_rabbitmq_url
from apikeys_shared.redis_url import parse_redis_url
from auth_gateway.config import load_config as load_gateway_config
from auth_gateway.routes import load_routes
from key_service.config import load_config as load_key_service_config
from tests.support.procs import ROOT

COMPOSE = ROOT / "compose.yaml"
HA = ROOT / "deploy" / "compose.ha.yaml"
STACKS = {"compose": (COMPOSE,), "ha": (COMPOSE, HA)}
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
SECRETS = (
    "APIKEYS_PEPPERS", "APIKEYS_SIGNING_KEY", "APIKEYS_VERIFY_KEYS", "APIKEYS_INTERNAL_TOKEN",
    "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "REDIS_PASSWORD", "RABBITMQ_ERLANG_COOKIE",
)
# Which package's settings each image target reads.
TARGET_CONFIG = {
    "key_service": [ROOT / "key_service" / "config.py"],
    "auth_gateway": [ROOT / "auth_gateway" / "config.py"],
    "demo_backend": sorted((ROOT / "demo_backend").glob("*.py")),
}
_LOAD_SECRETS = re.compile(r"load_secrets\(env,\s*signer=(True|False),\s*verifier=(True|False)\)")
_ENVIRON_GET = re.compile(r"environ(?:\.get)?[\[(]\s*\"([A-Z][A-Z0-9_]*)\"")
_INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(params=list(STACKS))
def stack(request: pytest.FixtureRequest) -> tuple[Path, ...]:
    """The compose files of one shape of the stack, in ``-f`` order."""
    return STACKS[request.param]


def _merge(base: Any, override: Any) -> Any:
    """Compose's merge of a later file into an earlier one, for what these files use: mappings
    merge key by key, anything else is replaced (deploy/compose.ha.yaml repeats a list whole
    when it changes one)."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return override


def _compose(files: tuple[Path, ...]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for path in files:
        data = _merge(data, yaml.safe_load(path.read_text()))
    return data


def _services(files: tuple[Path, ...]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose(files)["services"]
    return services


def _env_file(path: Path) -> tuple[dict[str, str], set[str]]:
    """``(set values, names documented in comments as # NAME=...)`` of an env file."""
    values: dict[str, str] = {}
    documented: set[str] = set()
    for line in path.read_text().splitlines():
        stripped = line.strip()
        match = re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=.*", stripped)
        if match:
            documented.add(match.group(1))
        elif stripped and not stripped.startswith("#"):
            name, _, value = stripped.partition("=")
            values[name] = value
    return values, documented


def _variables_read(target: str) -> tuple[set[str], set[str]]:
    """``(every variable, the required ones)`` that the code of an image target reads."""
    names: set[str] = set()
    required: set[str] = set()
    for path in TARGET_CONFIG[target]:
        source = path.read_text()
        for call in re.finditer(
            r"env\.(text|optional|integer|number|flag|url)\(\s*\"([A-Z][A-Z0-9_]*)\"(\s*\))?",
            source,
        ):
            names.add(call.group(2))
            if call.group(1) == "text" and call.group(3):
                required.add(call.group(2))
        names.update(_ENVIRON_GET.findall(source))
        secrets_call = _LOAD_SECRETS.search(source)
        if secrets_call:
            shared = {"APIKEYS_PEPPERS", "APIKEYS_INTERNAL_TOKEN"}
            if secrets_call.group(1) == "True":
                shared.add("APIKEYS_SIGNING_KEY")
            if secrets_call.group(2) == "True":
                shared.add("APIKEYS_VERIFY_KEYS")
            names |= shared
            required |= shared
    return names, required


def _generated_env() -> dict[str, str]:
    """What ``deploy/generate_env.py`` writes, as a mapping."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "generate_env.py"), "--output", "-"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if line and line[0] != "#")


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}``."""
    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op in (":?", "?"):
            raise AssertionError(f"compose would refuse to start: {name} unset ({arg})")
        return arg or ""
    return _INTERPOLATION.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def _service_environment(service: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """The environment compose would give a service's container (env files, then environment)."""
    result: dict[str, str] = {}
    for env_file in service.get("env_file", []):
        values, _ = _env_file(ROOT / env_file)
        result.update(values)
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "write environment as a mapping"
    for name, value in environment.items():
        result[name] = _interpolate(str(value), env)
    return result


def _dockerfile_targets() -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE.read_text(), re.M | re.I))


# -- the file and its images -----------------------------------------------------------------
def test_compose_parses_and_has_the_whole_stack(stack: tuple[Path, ...]) -> None:
    services = _services(stack)
    assert {"postgres", "redis", "rabbitmq", "key_service", "gateway", "demo_backend",
            "nginx"} <= set(services)
    assert services["gateway"]["deploy"]["replicas"] == 2
    # Compose's default mode, written out: podman-compose reads `replicas` only beside it.
    assert services["gateway"]["deploy"]["mode"] == "replicated"
    assert "container_name" not in services["gateway"], "replicas need generated names"
    assert "ports" not in services["gateway"], "replicas cannot share a host port"
    assert services["nginx"]["profiles"] == ["nginx"]
    assert "profiles" not in services["gateway_lb"]
    if HA in stack:
        assert {"rabbitmq-2", "rabbitmq-3", "redis-replica", "sentinel-1", "sentinel-2",
                "sentinel-3"} <= set(services)


def test_every_service_builds_from_an_existing_target_or_runs_a_pinned_image(
    stack: tuple[Path, ...],
) -> None:
    targets = _dockerfile_targets()
    _, documented = _env_file(ENV_EXAMPLE)
    variables: dict[str, str] = {}
    for name, service in _services(stack).items():
        build = service.get("build")
        if build is not None:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
            assert build["target"] in targets, f"{name}: no stage {build['target']}"
            assert build["target"] in TARGET_CONFIG, name
            # The base can be replaced (a mirror, the compose test's stand-in); empty, the
            # Dockerfile's pin holds.
            assert build["args"] == {"PYTHON_IMAGE": "${PYTHON_IMAGE:-}"}, name
        else:
            # ${NAME_IMAGE:-pinned}: replaceable from the environment, the pin by default.
            match = re.fullmatch(r"\$\{([A-Z]+_IMAGE):-([^}]+)\}", service["image"])
            assert match, f"{name}: image {service['image']} is not ${{X_IMAGE:-pinned}}"
            variable, image = match.groups()
            assert variables.setdefault(variable, image) == image, f"{variable}: two defaults"
            assert variable in documented, f"document {variable} in .env.example"
            repo, _, tag = image.rpartition(":")
            assert repo, f"{name}: image {image} has no tag"
            assert "/" not in tag, f"{name}: image {image} has no tag"
            assert re.match(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"
    assert set(variables) == {"POSTGRES_IMAGE", "REDIS_IMAGE", "RABBITMQ_IMAGE", "NGINX_IMAGE"}


def test_dockerfile_is_multi_stage_pinned_and_runs_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    # One pinned base, written once; PYTHON_IMAGE (empty by default) replaces it.
    assert re.search(r"^ARG PYTHON_IMAGE=$", text, re.M)
    bases = re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)
    pinned = [image for image, _ in bases if "PYTHON_IMAGE" in image]
    assert len(pinned) == 1, bases
    base = re.fullmatch(r"\$\{PYTHON_IMAGE:-(python:\d+\.\d+\.\d+-slim-\w+)\}", pinned[0])
    assert base is not None, pinned[0]
    _, documented = _env_file(ENV_EXAMPLE)
    assert "PYTHON_IMAGE" in documented
    assert len(bases) >= 3
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users
    assert all(u.split(":")[0] not in ("0", "root") for u in users)
    assert "COPY --from=build /opt/apikeys" in text
    # Everything the build copies from the context exists, and the context lets it through.
    ignore_text = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text()
    copied = [src for line in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.M)
              for src in line.split()]
    assert {"pyproject.toml", "shared/", "key_service/", "auth_gateway/"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies missing {source}"
        assert f"!{source.rstrip('/')}" in ignore_text, f"{source} is not in the context"
    # Secrets reach containers at run time only: no ARG or ENV of the image names one.
    for name in SECRETS:
        assert name not in text, f"{name} appears in the Dockerfile"
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text()
    assert ignore.splitlines()[2] == "**", "the build context starts from nothing"
    assert not re.search(r"^!.*(\.env|\.venv|data)", ignore, re.M)


# -- settings and secrets --------------------------------------------------------------------
def test_every_variable_a_service_reads_is_set_or_documented(stack: tuple[Path, ...]) -> None:
    for name, service in _services(stack).items():
        build = service.get("build")
        if build is None:
            continue
        reads, required = _variables_read(build["target"])
        environment = set(service.get("environment", {}))
        documented: set[str] = set()
        for env_file in service.get("env_file", []):
            path = ROOT / env_file
            assert path.is_file(), f"{name}: env file {env_file} is missing"
            values, comments = _env_file(path)
            environment |= set(values)
            documented |= comments
        missing = sorted(reads - environment - documented)
        assert not missing, f"{name} reads {missing} but compose neither sets nor documents them"
        assert not required - environment, f"{name}: required {required - environment} unset"


def test_services_accept_the_environment_compose_gives_them(stack: tuple[Path, ...]) -> None:
    env = _generated_env()
    services = _services(stack)
    config = load_key_service_config(_service_environment(services["key_service"], env))
    assert config.database_url.startswith("postgresql+asyncpg://apikeys:")
    assert config.host == "0.0.0.0"
    gateway_env = _service_environment(services["gateway"], env)
    gateway = load_gateway_config(gateway_env)
    assert gateway.key_service_url == "http://key_service:8081"
    if HA in stack:
        # Every RabbitMQ node for both services; the gateways find Redis through Sentinel.
        nodes = ["rabbitmq:5672", "rabbitmq-2:5672", "rabbitmq-3:5672"]
        for url in (config.rabbitmq_url, gateway.rabbitmq_url):
            assert [a.name for a in parse_rabbitmq_url(url)] == nodes
        redis_target = parse_redis_url(gateway.redis_url)
        assert redis_target.topology == "sentinel"
        assert len(redis_target.nodes) == 3
    # Only the two fronts, at fixed addresses outside the dynamic range, are believed.
    fronts = {name: services[name]["networks"]["default"]["ipv4_address"]
              for name in ("gateway_lb", "nginx")}
    fixed = {name: _interpolate(str(value), env) for name, value in fronts.items()}
    assert set(gateway.trusted_proxies) == set(fixed.values())
    ipam = _compose(stack)["networks"]["default"]["ipam"]["config"][0]
    subnet = ipaddress.ip_network(_interpolate(ipam["subnet"], env))
    dynamic = ipaddress.ip_network(_interpolate(ipam["ip_range"], env))
    for address in fixed.values():
        assert ipaddress.ip_address(address) in subnet
        assert ipaddress.ip_address(address) not in dynamic
        assert ipaddress.ip_address(address) != next(subnet.hosts())  # the bridge's own
        # and /metrics is not served through the fronts (published on the host)
        for allow in (gateway.metrics_allow, config.metrics_allow):
            assert allow is not None
            assert not any(ipaddress.ip_address(address) in ipaddress.ip_network(net)
                           for net in allow)
    # nor to the host through key_service's published port (docker-proxy: the bridge's own)
    assert config.metrics_allow is not None
    assert not any(next(subnet.hosts()) in ipaddress.ip_network(net)
                   for net in config.metrics_allow)
    routes_in_container = "/etc/apikeys/routes.toml"
    assert str(gateway.routes_path) == routes_in_container
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services["gateway"]["volumes"]}
    table = load_routes(ROOT / mounts[routes_in_container])
    assert [r.upstream for r in table.routes] == ["http://demo_backend:8090"]
    # The gateways verify; only key_service signs.
    assert "APIKEYS_SIGNING_KEY" not in gateway_env
    for name, service in services.items():
        if "APIKEYS_SIGNING_KEY" in service.get("environment", {}):
            assert name == "key_service", name


def test_env_example_lists_every_secret_empty_and_generate_env_fills_them(
    stack: tuple[Path, ...],
) -> None:
    values, documented = _env_file(ENV_EXAMPLE)
    assert set(values) == set(SECRETS)
    assert all(v == "" for v in values.values()), "no value belongs in .env.example"
    text = "".join(path.read_text() for path in stack)
    for name, op, _ in _INTERPOLATION.findall(text):
        if op in (":?", "?"):
            assert name in values, f"compose requires {name}; list it in .env.example"
        else:
            assert name in values or name in documented, f"document {name} in .env.example"
    generated = _generated_env()
    assert set(generated) == set(SECRETS)
    assert all(generated.values())
    assert _generated_env()["APIKEYS_PEPPERS"] != generated["APIKEYS_PEPPERS"]


def test_generate_env_writes_a_private_file_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    script = [sys.executable, str(ROOT / "deploy" / "generate_env.py"), "--output", str(target)]
    subprocess.run(script, check=True, capture_output=True, cwd=ROOT)
    assert target.stat().st_mode & 0o777 == 0o600
    first = target.read_text()
    again = subprocess.run(script, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 1
    assert "exists" in again.stderr
    assert target.read_text() == first


def test_no_secret_value_is_written_in_the_stack(stack: tuple[Path, ...]) -> None:
    files = [COMPOSE, DOCKERFILE, ENV_EXAMPLE, *sorted((ROOT / "deploy").rglob("*"))]
    # What generated secrets look like: base64 of 32 bytes, or long runs of key characters.
    shapes = re.compile(r"[A-Za-z0-9+/]{43}=|(?<![A-Za-z0-9])[A-Za-z0-9]{32,}(?![A-Za-z0-9])")
    for path in files:
        if not path.is_file() or path.suffix == ".py":
            continue
        for match in shapes.finditer(path.read_text()):
            raise AssertionError(f"{path.relative_to(ROOT)} holds a secret-like {match.group()!r}")
    for name, service in _services(stack).items():
        for key, value in service.get("environment", {}).items():
            value = str(value)
            if key.endswith(("PASSWORD", "PASS", "PEPPERS", "SIGNING_KEY", "VERIFY_KEYS", "TOKEN",
                             "COOKIE")):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), f"{name}.{key} = {value}"
            # Credentials in URLs come from .env as well.
            for password in re.findall(r"://[^:/@]*:([^@]*)@", value):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", password), f"{name}.{key}"


# -- health and order ------------------------------------------------------------------------
def test_healthchecks_and_depends_on_conditions(stack: tuple[Path, ...]) -> None:
    services = _services(stack)
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check.get("test"), f"{name} has no healthcheck command"
        assert not check.get("disable"), name
        for dependency, spec in service.get("depends_on", {}).items():
            condition = spec["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), name
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    needs = {
        "key_service": {"postgres", "rabbitmq"},
        "gateway": {"key_service", "redis", "rabbitmq"},
        "gateway_lb": {"gateway"},
        "nginx": {"gateway", "demo_backend"},
    }
    if HA in stack:
        needs["gateway"] |= {"sentinel-1", "sentinel-2", "sentinel-3"}
        needs |= {f"sentinel-{n}": {"redis"} for n in (1, 2, 3)} | {"redis-replica": {"redis"}}
    for name, dependencies in needs.items():
        assert dependencies <= set(services[name]["depends_on"]), name


def test_mounted_files_exist_and_nginx_accepts_the_configs(
    tmp_path: Path, stack: tuple[Path, ...],
) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.access(nginx, os.X_OK), "nginx is not installed (scripts/debian-packages.sh)"
    for name, service in _services(stack).items():
        for mount in service.get("volumes", []):
            source, target = mount.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts missing {source}"
                if source.endswith(".conf") and "nginx" in service.get("image", ""):
                    # A template of the nginx image's entrypoint: it puts the container's own
                    # nameservers (Docker's: 127.0.0.11) where the file says, and so works
                    # under podman's aardvark-dns as well.
                    assert target == "/etc/nginx/templates/default.conf.template", name
                    assert service["environment"]["NGINX_ENTRYPOINT_LOCAL_RESOLVERS"], name
                    text = (ROOT / source).read_text()
                    assert "resolver ${NGINX_LOCAL_RESOLVERS} " in text, source
                    assert "127.0.0.11" not in text, f"{source} names Docker's DNS"
                    conf = tmp_path / f"{name}.default.conf"
                    conf.write_text(text.replace("${NGINX_LOCAL_RESOLVERS}", "127.0.0.11"))
                    main = tmp_path / f"{name}.nginx.conf"
                    main.write_text(
                        f"pid {tmp_path}/{name}.pid;\nerror_log stderr;\n"
                        "events {}\nhttp {\n"
                        f"  client_body_temp_path {tmp_path};\n  access_log off;\n"
                        f"  include {conf};\n}}\n"
                    )
                    check = subprocess.run(
                        [nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(main)],
                        capture_output=True, text=True,
                    )
                    assert check.returncode == 0, f"{source}: {check.stderr}"


def test_docker_compose_config_accepts_the_file_where_compose_exists(
    tmp_path: Path, stack: tuple[Path, ...],
) -> None:
    docker = shutil.which("docker")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True) if docker else None
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in _generated_env().items()))
    if docker is None or probe is None or probe.returncode != 0:
        # No compose plugin here: the structural tests above are the whole check. The env file
        # must still satisfy every ${...:?} so that `docker compose config` would get that far.
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        for path in stack:
            _interpolate(path.read_text(), env)
        return
    result = subprocess.run(
        [docker, "compose", "--env-file", str(env_file),
         *(arg for path in stack for arg in ("-f", str(path))), "--profile",
         "nginx", "config", "--quiet"], capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_the_podman_dns_override_gives_the_fronts_the_networks_dns_server() -> None:
    """deploy/compose.podman-dns.yaml, for podman older than 4.5 (docs/compose-testing.md): the
    two nginx fronts, and nothing else, get the stack network's first address as their one
    nameserver, where aardvark-dns listens."""
    override: dict[str, Any] = yaml.safe_load((ROOT / "deploy/compose.podman-dns.yaml").read_text())
    services = _services((COMPOSE,))
    fronts = {name for name, s in services.items() if "NGINX_ENTRYPOINT_LOCAL_RESOLVERS"
              in (s.get("environment") or {})}
    assert set(override) == {"services"}
    assert set(override["services"]) == fronts == {"gateway_lb", "nginx"}
    subnet_spec = _compose((COMPOSE,))["networks"]["default"]["ipam"]["config"][0]["subnet"]
    subnet = ipaddress.ip_network(_interpolate(subnet_spec, {}))
    for name in fronts:
        assert set(override["services"][name]) == {"dns"}
        [dns] = override["services"][name]["dns"]
        assert dns == f"${{APIKEYS_NETWORK_DNS:-{next(subnet.hosts())}}}", dns
    _, documented = _env_file(ENV_EXAMPLE)
    assert "APIKEYS_NETWORK_DNS" in documented
