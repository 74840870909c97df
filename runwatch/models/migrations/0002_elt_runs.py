import functools
from enum import StrEnum
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops
from tortoise.migrations.constraints import UniqueConstraint



# The enums as they were when this migration was written: a migration never follows the live
# models (their later changes come with migrations of their own).
class LogLevel(StrEnum):
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


# The orphan window's default when this migration was written. A migration does not read the
# deployment's settings: an upgrade gives the runs open at that moment this window, and the
# reaper times them out from then on.
ORPHAN_WINDOW_SECONDS = 2 * 60 * 60


async def set_deadlines(apps, schema_editor):
    """Open runs get the deadline the orphan window gave them until now (start + window)."""
    window = ORPHAN_WINDOW_SECONDS
    client = schema_editor.client
    if client.capabilities.dialect == "postgres":
        await client.execute_query(
            "UPDATE run SET deadline_at = started_at + make_interval(secs => $1) "
            "WHERE status IN ('pending', 'running') AND started_at IS NOT NULL",
            [window],
        )
    else:
        await client.execute_query(
            "UPDATE run SET deadline_at = strftime('%Y-%m-%d %H:%M:%f+00:00', started_at, ?) "
            "WHERE status IN ('pending', 'running') AND started_at IS NOT NULL",
            [f"+{window} seconds"],
        )

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Gateway',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='gateways', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=200)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('last_seen_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('version', fields.CharField(null=True, max_length=100)),
                ('labels', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'gateway', 'app': 'models', 'unique_together': (('organisation', 'name'),), 'pk_attr': 'id', 'table_description': "An agent that claims and executes runs in a customer's environment."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RunLogLine',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('run', fields.ForeignKeyField('models.Run', source_field='run_id', db_constraint=True, to_field='id', related_name='log_lines', on_delete=OnDelete.CASCADE)),
                ('seq', fields.BigIntField()),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('level', fields.CharEnumField(description='INFO: info\nWARN: warn\nERROR: error', enum_type=LogLevel, max_length=8)),
                ('message', fields.TextField(unique=False)),
            ],
            options={'table': 'run_log_line', 'app': 'models', 'unique_together': (('run', 'seq'),), 'pk_attr': 'id', 'table_description': "One structured log line of a run, ordered within the run by `seq` (see `Run.log_seq`)."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RunTelemetrySample',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('run', fields.ForeignKeyField('models.Run', source_field='run_id', db_constraint=True, to_field='id', related_name='telemetry_samples', on_delete=OnDelete.CASCADE)),
                ('seq', fields.BigIntField()),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('rows', fields.BigIntField(null=True)),
                ('bytes', fields.BigIntField(null=True)),
                ('rows_delta', fields.BigIntField(null=True)),
                ('bytes_delta', fields.BigIntField(null=True)),
                ('progress', fields.FloatField(null=True)),
                ('phase', fields.CharField(null=True, max_length=200)),
                ('resource', fields.CharField(null=True, max_length=500)),
            ],
            options={'table': 'run_telemetry_sample', 'app': 'models', 'unique_together': (('run', 'seq'),), 'pk_attr': 'id', 'table_description': "One point of a run's live telemetry time series, ordered within the run by `seq`."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WebhookEndpoint',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='webhook_endpoints', on_delete=OnDelete.CASCADE)),
                ('pipeline', fields.ForeignKeyField('models.Pipeline', source_field='pipeline_id', null=True, db_constraint=True, to_field='id', related_name='webhook_endpoints', on_delete=OnDelete.CASCADE)),
                ('url', fields.CharField(max_length=2000)),
                ('secret', fields.CharField(max_length=100)),
                ('event_types', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('enabled', fields.BooleanField(default=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'webhook_endpoint', 'app': 'models', 'unique_together': (('organisation', 'pipeline'),), 'pk_attr': 'id', 'table_description': "Where an organisation's terminal-run events go: the organisation's default endpoint"},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WebhookDelivery',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='webhook_deliveries', on_delete=OnDelete.CASCADE)),
                ('endpoint', fields.ForeignKeyField('models.WebhookEndpoint', source_field='endpoint_id', db_constraint=True, to_field='id', related_name='deliveries', on_delete=OnDelete.CASCADE)),
                ('run', fields.ForeignKeyField('models.Run', source_field='run_id', null=True, db_constraint=True, to_field='id', related_name='webhook_deliveries', on_delete=OnDelete.SET_NULL)),
                ('event_type', fields.CharField(max_length=50)),
                ('message_id', fields.CharField(unique=True, max_length=64)),
                ('payload', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharEnumField(default=DeliveryStatus.PENDING, description='PENDING: pending\nDELIVERED: delivered\nFAILED: failed', enum_type=DeliveryStatus, max_length=16)),
                ('attempts', fields.IntField(default=0)),
                ('next_attempt_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('claim', fields.CharField(null=True, max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('delivered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_status_code', fields.IntField(null=True)),
                ('last_error', fields.TextField(null=True, unique=False)),
            ],
            options={'table': 'webhook_delivery', 'app': 'models', 'indexes': [Index(fields=['status', 'next_attempt_at']), Index(fields=['endpoint_id', 'id']), Index(fields=['run_id'])], 'pk_attr': 'id', 'table_description': 'One event for one endpoint: a row with a due time, claimed by a worker, retried with'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WebhookAttempt',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('delivery', fields.ForeignKeyField('models.WebhookDelivery', source_field='delivery_id', db_constraint=True, to_field='id', related_name='attempt_log', on_delete=OnDelete.CASCADE)),
                ('attempted_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('status_code', fields.IntField(null=True)),
                ('duration_ms', fields.IntField()),
                ('error', fields.TextField(null=True, unique=False)),
                ('response_excerpt', fields.TextField(null=True, unique=False)),
            ],
            options={'table': 'webhook_attempt', 'app': 'models', 'indexes': [Index(fields=['delivery_id', 'id'])], 'pk_attr': 'id', 'table_description': 'One HTTP attempt of a delivery: what the receiver answered, how long it took.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Pipeline',
            name='description',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='max_runtime_seconds',
            field=fields.IntField(null=True),
        ),
        ops.AddConstraint(
            model_name='Pipeline',
            constraint=UniqueConstraint(fields=('organisation', 'name'), name=None),
        ),
        ops.RemoveIndex(
            model_name='Run',
            name=None,
            fields=['pipeline_id', 'status', 'started_at'],
        ),
        ops.RemoveIndex(
            model_name='Run',
            name=None,
            fields=['status', 'started_at'],
        ),
        ops.AddField(
            model_name='Run',
            name='claimed_by_token_id',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='Run',
            name='correlation_id',
            field=fields.CharField(null=True, max_length=200),
        ),
        ops.AddField(
            model_name='Run',
            name='deadline_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Run',
            name='environment',
            field=fields.CharField(default='default', db_default='default', max_length=100),
        ),
        ops.AddField(
            model_name='Run',
            name='gateway',
            field=fields.ForeignKeyField('models.Gateway', source_field='gateway_id', null=True, db_constraint=True, to_field='id', related_name='claimed_runs', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='Run',
            name='log_base',
            field=fields.BigIntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='Run',
            name='log_seq',
            field=fields.BigIntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='Run',
            name='partition_column',
            field=fields.CharField(null=True, max_length=200),
        ),
        ops.AddField(
            model_name='Run',
            name='partition_value',
            field=fields.CharField(null=True, max_length=1000),
        ),
        ops.AddField(
            model_name='Run',
            name='sample_base',
            field=fields.BigIntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='Run',
            name='sample_seq',
            field=fields.BigIntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='Run',
            name='target_gateway',
            field=fields.ForeignKeyField('models.Gateway', source_field='target_gateway_id', null=True, db_constraint=True, to_field='id', related_name='targeted_runs', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='Run',
            name='telemetry_summary',
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='Run',
            name='triggered_by',
            field=fields.CharField(null=True, max_length=200),
        ),
        ops.AddIndex(
            model_name='Run',
            index=Index(fields=['pipeline_id', 'status', 'deadline_at']),
        ),
        ops.AddIndex(
            model_name='Run',
            index=Index(fields=['status', 'deadline_at']),
        ),
        ops.AddIndex(
            model_name='Run',
            index=Index(fields=['gateway_id', 'status']),
        ),
        ops.AddIndex(
            model_name='Run',
            index=Index(fields=['organisation_id', 'status', 'id']),
        ),
        ops.AddConstraint(
            model_name='Run',
            constraint=UniqueConstraint(fields=('organisation', 'correlation_id'), name=None),
        ),
        ops.AddField(
            model_name='ServiceToken',
            name='gateway',
            field=fields.ForeignKeyField('models.Gateway', source_field='gateway_id', null=True, db_constraint=True, to_field='id', related_name='tokens', on_delete=OnDelete.CASCADE),
        ),
        ops.RunPython(set_deadlines, ops.RunPython.noop),
    ]
