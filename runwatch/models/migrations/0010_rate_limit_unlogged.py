"""The shared rate limit's counters without the write-ahead log (PostgreSQL): every API request
updates one of these rows, and as a logged table each update was also a WAL record and, at
its commit, a wait for the WAL to reach the disk. The counters are worth nothing after a crash
(PostgreSQL empties an unlogged table then; the limit starts afresh) and standbys need not have
them (after a failover the counts start from zero). On SQLite the table is unused (the
per-process limiter is), so nothing changes there."""

from tortoise import migrations
from tortoise.migrations import operations as ops


async def unlogged(apps, schema_editor):  # type: ignore[no-untyped-def]
    client = schema_editor.client
    if client.capabilities.dialect == "postgres":
        await client.execute_script("ALTER TABLE rate_limit_window SET UNLOGGED")


async def logged(apps, schema_editor):  # type: ignore[no-untyped-def]
    client = schema_editor.client
    if client.capabilities.dialect == "postgres":
        await client.execute_script("ALTER TABLE rate_limit_window SET LOGGED")


class Migration(migrations.Migration):
    dependencies = [("models", "0009_rate_limit_window")]

    initial = False

    operations = [
        ops.RunPython(unlogged, logged),
    ]
