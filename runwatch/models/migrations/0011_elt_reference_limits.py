"""eltPulse's text limits (datapulse `web/lib/elt/run-types.ts`): a run's `partition_column`
256 characters (was 200), `partition_value` 2048 (was 1000), a telemetry sample's `resource`
512 (was 500), and `triggered_by` 2400 (was 200): a client sends at most 256, and a slice's
derived `backfill:partition:<column>:<value>` (the reference's, for a run with a partition and
no trigger) holds a whole column and value.

On PostgreSQL a wider VARCHAR is a change of the catalogue only (no table rewrite). SQLite
ignores a VARCHAR's length, and Tortoise's AlterField there rebuilds the table (a copy, a
DROP and a rename, which loses the table's indexes and would cascade to its dependents'
rows): on SQLite only the migration state changes.
"""

from typing import Any

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

# table, column, old length, new length
WIDENED = (
    ("run", "triggered_by", 200, 2400),
    ("run", "partition_column", 200, 256),
    ("run", "partition_value", 1000, 2048),
    ("run_telemetry_sample", "resource", 500, 512),
)


class WidenVarchar(ops.AlterField):
    """AlterField of a CharField's length: `ALTER COLUMN … TYPE VARCHAR(n)` on PostgreSQL,
    nothing on SQLite (see the module's docstring)."""

    def __init__(self, model_name: str, name: str, table: str, old: int, new: int) -> None:
        super().__init__(model_name=model_name, name=name,
                         field=fields.CharField(null=True, max_length=new))
        self.table, self.old, self.new = table, old, new

    async def _alter(self, state_editor: Any, length: int) -> None:
        if state_editor is None:
            return
        client = state_editor.client
        if client.capabilities.dialect == "postgres":
            await client.execute_script(
                f'ALTER TABLE "{self.table}" ALTER COLUMN "{self.name}" TYPE VARCHAR({length})')

    async def database_forward(self, app_label, old_state, new_state,  # type: ignore[no-untyped-def]
                               state_editor=None) -> None:
        await self._alter(state_editor, self.new)

    async def database_backward(self, app_label, old_state, new_state,  # type: ignore[no-untyped-def]
                                state_editor=None) -> None:
        await self._alter(state_editor, self.old)


MODELS = {"run": "Run", "run_telemetry_sample": "RunTelemetrySample"}


class Migration(migrations.Migration):
    dependencies = [("models", "0010_rate_limit_unlogged")]

    initial = False

    operations = [WidenVarchar(MODELS[table], column, table, old, new)
                  for table, column, old, new in WIDENED]
