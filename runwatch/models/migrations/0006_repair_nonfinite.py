"""Data only: JSON columns that hold NaN or ±Infinity (stored on SQLite before every entrance
refused them, runwatch.resolvers.strict_json) get null in their place, so that every later read
answers strict JSON again. PostgreSQL's jsonb never accepted them: nothing to do there."""

import json
import math

from tortoise import migrations
from tortoise.migrations import operations as ops

COLUMNS = (
    ("connection", "settings"),
    ("gateway", "labels"),
    ("pipeline", "pipeline_metadata"),
    ("run", "telemetry_summary"),
    ("run", "execution_metadata"),
    ("run", "anomaly_flags"),
    ("task", "payload"),
    ("address", "address_metadata"),
    ("webhook_endpoint", "event_types"),
    ("webhook_delivery", "payload"),
)


def finite(value):
    """The value with every non-finite number replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [finite(inner) for inner in value]
    return value


async def repair_nonfinite(apps, schema_editor):
    client = schema_editor.client
    if client.capabilities.dialect != "sqlite":
        return
    for table, column in COLUMNS:
        rows = await client.execute_query_dict(
            f"SELECT id, {column} AS value FROM {table} "  # noqa: S608 (names are constants)
            f"WHERE {column} LIKE '%NaN%' OR {column} LIKE '%Infinity%'")
        for row in rows:
            try:
                value = json.loads(row["value"])
            except (TypeError, ValueError, RecursionError):
                continue
            repaired = json.dumps(finite(value), allow_nan=False)
            if repaired != json.dumps(value):
                await client.execute_query(
                    f"UPDATE {table} SET {column} = ? WHERE id = ?",  # noqa: S608
                    [repaired, row["id"]])


class Migration(migrations.Migration):
    dependencies = [('models', '0005_token_last_used')]

    initial = False

    operations = [
        ops.RunPython(repair_nonfinite, ops.RunPython.noop),
    ]
