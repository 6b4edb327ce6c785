"""The JavaScript and Go verification examples of docs/events.md, run against key_service's events.

The code blocks are taken from the page as they are and run by Node.js and Go on events signed
by a real key_service, with the keys it publishes at ``/api/v1/verify-keys``: a genuine event
verifies, and a tampered body, another signer or an untrusted key does not.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from key_service.config import KeyServiceConfig
from tests.conftest import AmqpNames
from tests.support.procs import ROOT

from .conftest import AiohttpClient, make_config, start_admin

PAGE = ROOT / "docs" / "events.md"

NODE_HARNESS = """
import { readFileSync } from "node:fs";
import { trustedKeys, verifyEvent } from "./events.mjs";

const input = JSON.parse(readFileSync(process.argv[2], "utf8"));
const keys = trustedKeys(input.keys);
const results = input.cases.map(
  (c) => verifyEvent(Buffer.from(c.body, "utf8"), c.signature, c.signing_key, keys));
process.stdout.write(JSON.stringify(results));
"""

GO_HARNESS = """
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"check/events"
)

func main() {
	var input struct {
		Keys  []events.VerifyKey `json:"keys"`
		Cases []struct {
			Body       string `json:"body"`
			Signature  string `json:"signature"`
			SigningKey string `json:"signing_key"`
		} `json:"cases"`
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := json.Unmarshal(data, &input); err != nil {
		panic(err)
	}
	keys, err := events.TrustedKeys(input.Keys)
	if err != nil {
		panic(err)
	}
	results := []bool{}
	for _, c := range input.Cases {
		ok := events.VerifyEvent([]byte(c.Body), c.Signature, c.SigningKey, keys)
		results = append(results, ok)
	}
	out, _ := json.Marshal(results)
	fmt.Print(string(out))
}
"""


def _block(language: str) -> str:
    (code,) = re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), flags=re.S)
    return str(code)


@pytest.fixture
async def signed(
    secrets_env: dict[str, str], sqlite_url: str, tmp_path: Path, amqp_names: AmqpNames,
    aiohttp_client: AiohttpClient,
) -> dict[str, Any]:
    """Cases built from key_service's own feed and verify keys; the expected verdicts."""
    config: KeyServiceConfig = make_config(secrets_env, sqlite_url, tmp_path, amqp_names.exchange)
    admin = await start_admin(config, aiohttp_client)
    key = await admin.issue("from the docs")
    await admin.revoke(key["key_id"])
    keys = (await (await admin.http.get("/api/v1/verify-keys")).json())["keys"]
    feed = await admin.http.get(
        "/internal/v1/events",
        headers={"Authorization": f"Bearer {config.secrets.internal_token}"})
    issued, revoked = (await feed.json())["events"]
    cases = [issued, revoked,
             {**revoked, "body": revoked["body"].replace('"revoked"', '"active"')},
             {**issued, "signature": revoked["signature"]},
             {**issued, "signing_key": "0" * 16}]
    return {"keys": keys, "cases": cases, "expected": [True, True, False, False, False]}


def _run(command: list[str], cwd: Path) -> list[bool]:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    verdicts: list[bool] = json.loads(done.stdout)
    return verdicts


def test_the_javascript_example_verifies_key_services_events(
    signed: dict[str, Any], tmp_path: Path,
) -> None:
    node = shutil.which("node")
    assert node, "Node.js is required (Debian: apt-get install nodejs)"
    work = tmp_path / "js"
    work.mkdir()
    (work / "events.mjs").write_text(_block("js"))
    (work / "check.mjs").write_text(NODE_HARNESS)
    (work / "input.json").write_text(json.dumps(signed))
    assert _run([node, "check.mjs", "input.json"], work) == signed["expected"]


def test_the_go_example_verifies_key_services_events(
    signed: dict[str, Any], tmp_path: Path,
) -> None:
    go = shutil.which("go")
    assert go, "Go is required (scripts/debian-packages.sh installs golang-go)"
    work = tmp_path / "go"
    (work / "events").mkdir(parents=True)
    (work / "go.mod").write_text("module check\n\ngo 1.19\n")
    (work / "events" / "events.go").write_text(_block("go"))
    (work / "main.go").write_text(GO_HARNESS)
    (work / "input.json").write_text(json.dumps(signed))
    assert _run([go, "run", ".", "input.json"], work) == signed["expected"]
