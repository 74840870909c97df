"""`/health` (the process answers) and `/ready` (the database answers in time, every migration
is applied, the in-process workers run): what load balancers and Kubernetes probes call."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime

import httpx
from tortoise import connections

from runwatch import __version__
from runwatch.db import migration_names
from tests.conftest import DIALECT, _create_pg_database, _drop_pg_database
from tests.test_cli import _free_port
from tests.test_cli_ops import _serve_until_bound, _stop, clean_env

LAST = migration_names()[-1]


async def test_health_and_ready_need_no_token(client):
    r = await client.get("/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok", "version": __version__})
    r = await client.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {
        "database": "ok", "migrations": "ok", "workers": "not in this process"}}


async def test_pending_migrations_are_not_ready(client):
    conn = connections.get("default")
    await conn.execute_script(f"DELETE FROM tortoise_migrations WHERE name = '{LAST}'")
    try:
        r = await client.get("/ready")
        assert r.status_code == 503
        assert r.json() == {"status": "not ready", "checks": {
            "database": "ok", "migrations": f"pending {LAST}: run `runwatch migrate`",
            "workers": "not in this process"}}
        assert (await client.get("/health")).status_code == 200  # alive all the same
    finally:
        await conn.execute_query(
            "INSERT INTO tortoise_migrations (app, name, applied_at) VALUES "
            + ("($1, $2, $3)" if DIALECT == "postgres" else "(?, ?, ?)"),
            ["models", LAST, datetime.now(UTC)])
    assert (await client.get("/ready")).status_code == 200


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=10)


async def test_a_server_whose_database_goes_away_is_not_ready(tmp_path):
    """A real server with its workers: ready; then its database goes wrong under it
    (PostgreSQL: dropped with its connections; SQLite: another process rolls a migration's
    record back, as an older release's `migrate` would not but a restore from backup can) and
    `/ready` says 503 within its timeout, naming the check, while `/health` stays 200."""
    if DIALECT == "postgres":
        name, url = await _create_pg_database()
    else:
        url = f"sqlite://{tmp_path}/ready.db"
    home = tmp_path / "home"
    env = clean_env(home, DATABASE_URL=url, RUNWATCH_READY_TIMEOUT_SECONDS="2")
    port = _free_port()
    # one process: its workers run in it (several: in a process of their own)
    proc, lines = _serve_until_bound(["serve", "--port", str(port), "--workers", "1"], tmp_path,
                                     env)
    base = f"http://127.0.0.1:{port}"
    try:
        assert "Uvicorn running" in "\n".join(lines), lines
        r = await asyncio.to_thread(_get, f"{base}/ready")
        assert r.status_code == 200, r.text
        assert r.json()["checks"] == {"database": "ok", "migrations": "ok", "workers": "ok"}
        if DIALECT == "postgres":
            await _drop_pg_database(name)
        else:
            with sqlite3.connect(tmp_path / "ready.db") as db:
                db.execute("DELETE FROM tortoise_migrations WHERE name = ?", (LAST,))
            db.close()
        start = time.monotonic()
        r = await asyncio.to_thread(_get, f"{base}/ready")
        assert time.monotonic() - start < 8
        assert r.status_code == 503, r.text
        checks = r.json()["checks"]
        assert r.json()["status"] == "not ready"
        if DIALECT == "postgres":
            assert checks["database"].startswith("unreachable: "), checks
            assert "migrations" not in checks
        else:
            assert checks["database"] == "ok"
            assert checks["migrations"] == f"pending {LAST}: run `runwatch migrate`"
        assert checks["workers"] == "ok"
        assert (await asyncio.to_thread(_get, f"{base}/health")).status_code == 200
    finally:
        _stop(proc)


def test_ready_is_documented_in_openapi(settings):
    from runwatch.rest_shim.openapi import build_document

    ready = build_document(settings)["paths"]["/ready"]["get"]
    assert {"200", "503"} <= set(ready["responses"])
