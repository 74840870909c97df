from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

from enum import StrEnum


# The enum as it was when this migration was written (a migration never follows the live
# models).
class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Organisation',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=200)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'organisation', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A tenant. Every other row belongs to exactly one organisation.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Connection',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='connections', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=200)),
                ('warehouse_type', fields.CharField(max_length=50)),
                ('settings', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'connection', 'app': 'models', 'unique_together': (('organisation', 'name'),), 'pk_attr': 'id', 'table_description': 'A warehouse endpoint an organisation delivers into. Only non-secret settings are kept.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Pipeline',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='pipelines', on_delete=OnDelete.CASCADE)),
                ('connection', fields.ForeignKeyField('models.Connection', source_field='connection_id', null=True, db_constraint=True, to_field='id', related_name='pipelines', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=200)),
                ('kind', fields.CharField(default='delivery', max_length=30)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('last_success_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('revision', fields.BigIntField(default=0)),
                ('last_delivery_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'pipeline', 'app': 'models', 'indexes': [Index(fields=['connection_id', 'organisation_id'])], 'pk_attr': 'id', 'table_description': "What runs. A connection's delivery pipeline has `connection` set."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PipelineHourlyStats',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('pipeline', fields.ForeignKeyField('models.Pipeline', source_field='pipeline_id', db_constraint=True, to_field='id', related_name='hourly_stats', on_delete=OnDelete.CASCADE)),
                ('hour', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('runs_succeeded', fields.IntField(default=0)),
                ('runs_failed', fields.IntField(default=0)),
                ('events_total', fields.BigIntField(default=0)),
                ('events_evaluations', fields.BigIntField(default=0)),
                ('events_custom', fields.BigIntField(default=0)),
                ('dlq_batches', fields.BigIntField(default=0)),
            ],
            options={'table': 'pipeline_hourly_stats', 'app': 'models', 'unique_together': (('pipeline', 'hour'),), 'pk_attr': 'id', 'table_description': "Outcomes of a pipeline's runs, summed per UTC hour of the run's finish time."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Run',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='runs', on_delete=OnDelete.CASCADE)),
                ('pipeline', fields.ForeignKeyField('models.Pipeline', source_field='pipeline_id', db_constraint=True, to_field='id', related_name='runs', on_delete=OnDelete.CASCADE)),
                ('parent', fields.ForeignKeyField('models.Run', source_field='parent_id', null=True, db_constraint=True, to_field='id', related_name='children', on_delete=OnDelete.CASCADE)),
                ('status', fields.CharEnumField(default=RunStatus.PENDING, description='PENDING: pending\nRUNNING: running\nSUCCEEDED: succeeded\nFAILED: failed\nCANCELLED: cancelled\nTIMED_OUT: timed_out', enum_type=RunStatus, max_length=16)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('events_delivered', fields.BigIntField(null=True)),
                ('events_evaluations', fields.BigIntField(null=True)),
                ('events_custom', fields.BigIntField(null=True)),
                ('dlq_batches', fields.IntField(null=True)),
                ('rows_total', fields.BigIntField(null=True)),
                ('rows_inserted', fields.BigIntField(null=True)),
                ('rows_updated', fields.BigIntField(null=True)),
                ('rows_deleted', fields.BigIntField(null=True)),
                ('bytes', fields.BigIntField(null=True)),
                ('error', fields.TextField(null=True, unique=False)),
            ],
            options={'table': 'run', 'app': 'models', 'indexes': [Index(fields=['pipeline_id', 'status', 'finished_at']), Index(fields=['pipeline_id', 'status', 'started_at']), Index(fields=['status', 'started_at']), Index(fields=['pipeline_id', 'id']), Index(fields=['organisation_id', 'id'])], 'pk_attr': 'id', 'table_description': 'One execution of a pipeline, with the typed metrics every contract maps onto.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ServiceToken',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='tokens', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=200)),
                ('key_id', fields.CharField(unique=True, max_length=16)),
                ('secret_hash', fields.CharField(max_length=64)),
                ('scopes', fields.CharField(description='comma-separated scopes', max_length=200)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'service_token', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A bearer token. Only a SHA-256 of its secret part is stored.'},
            bases=['Model'],
        ),
    ]
