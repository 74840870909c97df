"""Migrations carry existing data forward: a database at 0001 with open warehouse runs gets
their deadlines (start + the orphan window they were judged by) when 0002 adds the column."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import asyncpg

from runwatch.settings import normalise_database_url
from tests.conftest import ADMIN_PG_URL, DIALECT

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from tortoise import Tortoise, connections
    from tortoise.migrations.api.migrate import migrate
    from runwatch.db import tortoise_config

    async def main(url):
        config = tortoise_config(url)
        await migrate(config=config, target="models.0001_initial")
        conn = connections.get("default")
        await conn.execute_script(
            "INSERT INTO organisation (name, created_at) VALUES ('o', '2026-01-01 00:00:00+00:00');"
            "INSERT INTO pipeline (organisation_id, name, kind, created_at, revision) "
            "VALUES (1, 'p', 'delivery', '2026-01-01 00:00:00+00:00', 0);"
            "INSERT INTO run (organisation_id, pipeline_id, status, created_at, updated_at, "
            "started_at) VALUES (1, 1, 'running', '2026-01-01 00:00:00+00:00', "
            "'2026-01-01 00:00:00+00:00', '2026-01-01 10:00:00+00:00');"
            "INSERT INTO run (organisation_id, pipeline_id, status, created_at, updated_at, "
            "started_at, finished_at) VALUES (1, 1, 'succeeded', '2026-01-01 00:00:00+00:00', "
            "'2026-01-01 00:00:00+00:00', '2026-01-01 09:00:00+00:00', "
            "'2026-01-01 09:30:00+00:00');")
        await Tortoise.close_connections()
        await migrate(config=config)
        await Tortoise.init(config=config)
        from runwatch.models import Run
        for run in await Run.all().order_by("id"):
            print(run.id, run.status, run.deadline_at.isoformat() if run.deadline_at else None,
                  run.environment, run.log_seq)
        await Tortoise.close_connections()

    asyncio.run(main(sys.argv[1]))
""")


async def _database(tmp_path) -> tuple[str, str | None]:
    if DIALECT != "postgres":
        return normalise_database_url(f"sqlite://{tmp_path}/upgrade.db"), None
    name = f"runwatch_upgrade_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(ADMIN_PG_URL.replace("asyncpg://", "postgres://"), timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return normalise_database_url(f"{ADMIN_PG_URL.rsplit('/', 1)[0]}/{name}"), name


async def test_upgrade_from_0001_sets_deadlines_of_open_runs(tmp_path):
    url, pg_name = await _database(tmp_path)
    try:
        out = subprocess.run([sys.executable, "-c", SCRIPT, url], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.split("\n")
        assert lines[0] == "1 running 2026-01-01T12:00:00+00:00 default 0", out.stdout
        assert lines[1] == "2 succeeded None default 0", out.stdout
    finally:
        if pg_name:
            conn = await asyncpg.connect(ADMIN_PG_URL.replace("asyncpg://", "postgres://"))
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
            finally:
                await conn.close()
