"""The command line, run as a user would: real processes, real databases."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from runwatch.resolvers.tokens import authenticate

RUNWATCH = [sys.executable, "-m", "runwatch.cli"]


def run_cli(database_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([*RUNWATCH, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


async def test_org_and_token_lifecycle(database_url, app):
    created = run_cli(database_url, "org", "create", "acme")
    assert created.returncode == 0, created.stderr
    org_id = int(created.stdout.strip().splitlines()[-1])

    issued = run_cli(database_url, "token", "create", "--org", str(org_id),
                     "--scope", "read,report", "--name", "loader")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip().splitlines()[-1]
    assert token.startswith("rw_")
    caller = await authenticate(token)
    assert caller is not None and caller.organisation_id == org_id
    assert {s.value for s in caller.scopes} == {"read", "report"}

    revoked = run_cli(database_url, "token", "revoke", token)
    assert revoked.returncode == 0, revoked.stderr
    assert await authenticate(token) is None


async def test_token_create_refuses_bad_scope_and_unknown_org(database_url, app):
    bad_scope = run_cli(database_url, "token", "create", "--org", "1", "--scope", "read,root")
    assert bad_scope.returncode == 2
    assert "unknown scope 'root'" in bad_scope.stderr
    unknown_org = run_cli(database_url, "token", "create", "--org", "999999", "--scope", "read")
    assert unknown_org.returncode == 1
    assert "organisation 999999 not found" in unknown_org.stderr


async def test_gateway_lifecycle(database_url, app):
    org_id = int(run_cli(database_url, "org", "create", "acme").stdout.strip().splitlines()[-1])
    created = run_cli(database_url, "gateway", "create", "--org", str(org_id), "gw-eu-1")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    caller = await authenticate(token)
    assert caller is not None and caller.organisation_id == org_id
    assert caller.gateway_id is not None and {s.value for s in caller.scopes} == {"gateway"}

    duplicate = run_cli(database_url, "gateway", "create", "--org", str(org_id), "gw-eu-1")
    assert duplicate.returncode == 2 and "already exists" in duplicate.stderr
    unknown_org = run_cli(database_url, "gateway", "create", "--org", "999999", "gw")
    assert unknown_org.returncode == 1 and "organisation 999999 not found" in unknown_org.stderr

    rotated = run_cli(database_url, "gateway", "token", str(caller.gateway_id), "--revoke-others")
    assert rotated.returncode == 0, rotated.stderr
    new_token = rotated.stdout.strip().splitlines()[-1]
    assert await authenticate(token) is None
    assert (await authenticate(new_token)).gateway_id == caller.gateway_id

    listed = run_cli(database_url, "gateway", "list", "--org", str(org_id))
    assert listed.returncode == 0 and "gw-eu-1" in listed.stdout

    revoked = run_cli(database_url, "gateway", "revoke", str(caller.gateway_id))
    assert revoked.returncode == 0, revoked.stderr
    assert await authenticate(new_token) is None
    # a plain token cannot take the gateway scope
    sneaky = run_cli(database_url, "token", "create", "--org", str(org_id), "--scope", "gateway")
    assert sneaky.returncode == 2 and "gateway" in sneaky.stderr


def test_bad_database_url_is_a_clear_error():
    out = run_cli("mysql://nope", "migrate")
    assert out.returncode == 2
    assert "DATABASE_URL" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_on_an_empty_embedded_database(tmp_path: Path):
    """`runwatch serve` with no configuration: migrates the file in the data directory,
    bootstraps an organisation and an admin token, prints the console URL, and answers with
    that token."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "RUNWATCH_", "XDG_"))}
    env["HOME"] = str(tmp_path / "home")
    proc = subprocess.Popen([*RUNWATCH, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line.rstrip())
            if "Uvicorn running" in line:  # bound (startup completes before the bind)
                break
        output = "\n".join(lines)
        assert f"GraphiQL console: http://localhost:{port}/graphql" in output, output
        assert f"Status UI: http://localhost:{port}/ " in output, output
        token = next(x.strip() for x in lines if x.strip().startswith("rw_"))
        assert (tmp_path / "home/.local/share/runwatch/runwatch.db").exists()
        assert not (tmp_path / "runwatch.db").exists()
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health", timeout=10).json()["status"] == "ok"
        r = httpx.post(f"{base}/graphql", json={"query": "{ connections { nodes { id } } }"},
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.json()["data"] == {"connections": {"nodes": []}} and "errors" not in r.json()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()

    again = subprocess.run([*RUNWATCH, "migrate"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0 and "already up to date" in again.stdout


@pytest.mark.parametrize("args", [["--help"], ["token", "--help"], ["gateway", "--help"]])
def test_help(args):
    out = subprocess.run([*RUNWATCH, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "usage" in out.stdout


async def test_bootstrap_only_on_an_empty_embedded_database(app, tenant):
    from dataclasses import replace

    from runwatch.cli import _bootstrap
    from runwatch.settings import Settings

    postgres = replace(Settings(), database_url="asyncpg://postgres@127.0.0.1:5432/any")
    assert await _bootstrap(postgres) is None  # never a token nobody asked for
    sqlite = replace(Settings(), database_url="sqlite://runwatch.db")
    assert await _bootstrap(sqlite) is None  # organisations exist already
