"""Data only: webhook endpoints that hold the old default event list (all four events, what an
endpoint got when it named none) get the new default, eltPulse's three (`run.succeeded`,
`run.failed`, `run.cancelled`). Such an endpoint now hears of a timed-out run as `run.failed`
with `timedOut: true`, as eltPulse's receivers expect, instead of as `run.timed_out`, an event
they do not know (runwatch.resolvers.webhooks.run_event). An endpoint that listed the four
itself cannot be told apart from one that took the default; it sets `run.timed_out` again to
keep runwatch's event (the README says so). Backward puts the four back on the endpoints that
hold exactly the three."""

import json

from tortoise import migrations
from tortoise.migrations import operations as ops

ALL_FOUR = ["run.succeeded", "run.failed", "run.cancelled", "run.timed_out"]
THREE = ALL_FOUR[:3]


async def _replace(schema_editor, old: list[str], new: list[str]) -> None:
    client = schema_editor.client
    postgres = client.capabilities.dialect == "postgres"
    update = ("UPDATE webhook_endpoint SET event_types = $1::jsonb WHERE id = $2" if postgres
              else "UPDATE webhook_endpoint SET event_types = ? WHERE id = ?")
    for row in await client.execute_query_dict("SELECT id, event_types FROM webhook_endpoint"):
        value = row["event_types"]
        if isinstance(value, str):  # SQLite (and asyncpg without a codec) hand JSON back as text
            value = json.loads(value)
        if value == old:
            await client.execute_query(update, [json.dumps(new, separators=(",", ":")), row["id"]])


async def forward(apps, schema_editor):
    await _replace(schema_editor, ALL_FOUR, THREE)


async def backward(apps, schema_editor):
    await _replace(schema_editor, THREE, ALL_FOUR)


class Migration(migrations.Migration):
    dependencies = [("models", "0011_elt_reference_limits")]

    initial = False

    operations = [
        ops.RunPython(forward, backward),
    ]
