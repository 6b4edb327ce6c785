"""Stand-ins for the official images compose.yaml pins, built from Debian's packages.

No registry can be reached from the machines these tests run on, so the pinned images
(postgres, redis, rabbitmq, nginx-unprivileged, python) are replaced through the variables
compose.yaml reads (``POSTGRES_IMAGE`` ...) by images built here: a base made with
``debootstrap --variant=minbase`` and ``podman import``, then one ``podman build`` per
stand-in from ``standins/<name>/Containerfile``. What each honours of its official image's
contract, and where it differs, is written in ``standins/CONTRACT.md``.

Every image is tagged with a digest of what it is built from (the recipe, the files of its
directory, the base it starts from), so an unchanged stand-in costs nothing on the next run and
a changed one is built anew; the tags it replaces are removed.

The base trusts the certificate authorities the host added locally
(``/usr/local/share/ca-certificates``): builds fetch from Debian and PyPI through whatever
TLS-inspecting proxy the host trusts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.compose.engine import CACHE, Engine, EngineError

__all__ = ["IMAGE_VARIABLES", "build_standins"]

HERE = Path(__file__).resolve().parent / "standins"
REPOSITORY = "localhost/apikeys-standin"
# compose.yaml's variable for each stand-in.
IMAGE_VARIABLES = {
    "postgres": "POSTGRES_IMAGE",
    "redis": "REDIS_IMAGE",
    "rabbitmq": "RABBITMQ_IMAGE",
    "nginx": "NGINX_IMAGE",
    "python": "PYTHON_IMAGE",
}
_SUITE = "bookworm"
_MIRROR = "http://deb.debian.org/debian"
_SOURCES = (
    f"deb {_MIRROR} {_SUITE} main\n"
    f"deb {_MIRROR} {_SUITE}-updates main\n"
    f"deb http://deb.debian.org/debian-security {_SUITE}-security main\n"
)
# As Debian's own container images: packages never start their services while being installed.
_POLICY_RC_D = "#!/bin/sh\nexit 101\n"
_LOCAL_CAS = Path("/usr/local/share/ca-certificates")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(hashlib.sha256(part).digest())
    return hasher.hexdigest()[:16]


def _tags(engine: Engine, repository: str) -> list[str]:
    out = engine.podman("images", "--format", "json", "--filter", f"reference={repository}").stdout
    return [name for image in json.loads(out) for name in image.get("Names") or ()
            if name.startswith(f"{repository}:")]


def _replace(engine: Engine, repository: str, keep: str) -> None:
    for tag in _tags(engine, repository):
        if tag != keep:
            engine.podman("rmi", tag, check=False)


def _base(engine: Engine, log: Callable[[str], None]) -> str:
    cas = sorted(_LOCAL_CAS.glob("*.crt"))
    recipe = json.dumps({"suite": _SUITE, "mirror": _MIRROR, "sources": _SOURCES,
                         "policy": _POLICY_RC_D, "variant": "minbase"}).encode()
    tag = f"{REPOSITORY}/debian:{_SUITE}-{_digest(recipe, *(p.read_bytes() for p in cas))}"
    if tag in _tags(engine, f"{REPOSITORY}/debian"):
        return tag
    started = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=ca-certificates", _SUITE,
             str(root), _MIRROR], capture_output=True, text=True, timeout=1200)
        if result.returncode != 0:
            raise EngineError(f"debootstrap failed:\n{result.stdout[-3000:]}{result.stderr}")
        (root / "etc/apt/sources.list").write_text(_SOURCES)
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text(_POLICY_RC_D)
        policy.chmod(0o755)
        for ca in cas:
            shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
        subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True,
                       capture_output=True, timeout=120)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            subprocess.run(
                ["podman", "import", "--quiet", "--change", f"ENV PATH={_PATH}",
                 "--change", 'CMD ["bash"]', "-", tag],
                stdin=tar.stdout, env=dict(engine.env), check=True, capture_output=True,
                timeout=600)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=60)
    _replace(engine, f"{REPOSITORY}/debian", tag)
    log(f"built the base {tag} (debootstrap + podman import) in "
        f"{time.monotonic() - started:.0f} s")
    return tag


def _standin(engine: Engine, name: str, base: str, log: Callable[[str], None]) -> str:
    directory = HERE / name
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    parts = [base.encode()] + [f"{p.relative_to(directory)}\0".encode() + p.read_bytes()
                                for p in files]
    tag = f"{REPOSITORY}/{name}:{_digest(*parts)}"
    if tag in _tags(engine, f"{REPOSITORY}/{name}"):
        return tag
    started = time.monotonic()
    engine.podman("build", "--quiet", "--build-arg", f"BASE={base}", "--tag", tag,
                  str(directory), timeout=1200)
    _replace(engine, f"{REPOSITORY}/{name}", tag)
    log(f"built the stand-in {tag} in {time.monotonic() - started:.0f} s")
    return tag


def build_standins(engine: Engine, log: Callable[[str], None]) -> dict[str, str]:
    """Make sure every stand-in exists; ``{compose variable: image}`` for compose's environment."""
    base = _base(engine, log)
    return {variable: _standin(engine, name, base, log)
            for name, variable in IMAGE_VARIABLES.items()}
