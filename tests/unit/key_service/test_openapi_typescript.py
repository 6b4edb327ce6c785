"""A TypeScript client generated from the served OpenAPI document type-checks under --strict.

openapi-typescript turns the document key_service serves at ``/api/v1/openapi.json`` into
types, and ``tests/typescript/client.ts`` (a tour of every operation with openapi-fetch, written
as a TypeScript user would) must compile with ``tsc --strict`` against them: the document
describes what a client handles, without casts.
The npm packages come from ``tests/typescript/package-lock.json`` (``make test`` installs them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from key_service.openapi import OPENAPI
from tests.support.procs import ROOT

PROJECT = ROOT / "tests" / "typescript"


def _tool(name: str) -> Path:
    path = PROJECT / "node_modules" / ".bin" / name
    assert path.exists(), f"{name} is missing: npm ci --prefix tests/typescript (make test does it)"
    return path


def test_a_generated_typescript_client_type_checks(tmp_path: Path) -> None:
    work = tmp_path / "ts"
    work.mkdir()
    (work / "openapi.json").write_text(json.dumps(OPENAPI))
    for name in ("client.ts", "tsconfig.json"):
        shutil.copy(PROJECT / name, work / name)
    (work / "node_modules").symlink_to(PROJECT / "node_modules")
    generated = subprocess.run(
        [str(_tool("openapi-typescript")), "openapi.json", "-o", "api.d.ts"],
        cwd=work, capture_output=True, text=True, timeout=120, check=False)
    assert generated.returncode == 0, generated.stderr
    checked = subprocess.run([str(_tool("tsc")), "-p", "."], cwd=work, capture_output=True,
                             text=True, timeout=300, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
