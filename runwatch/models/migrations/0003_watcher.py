from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

from enum import StrEnum


# The enums as they were when this migration was written (a migration never follows the live
# models).
class TaskStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class ChannelKind(StrEnum):
    SLACK = "slack"
    WEBHOOK = "webhook"


class Migration(migrations.Migration):
    dependencies = [('models', '0002_elt_runs')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AddressType',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='address_types', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=150)),
                ('group_name', fields.CharField(max_length=150)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'address_type', 'app': 'models', 'unique_together': (('organisation', 'name'),), 'pk_attr': 'id', 'table_description': 'A kind of dataset address (`postgres`) and its group (`database`).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Address',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='addresses', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=150)),
                ('address_type', fields.ForeignKeyField('models.AddressType', source_field='address_type_id', db_constraint=True, to_field='id', related_name='addresses', on_delete=OnDelete.RESTRICT)),
                ('namespace', fields.CharField(null=True, max_length=500)),
                ('database_name', fields.CharField(null=True, max_length=50)),
                ('schema_name', fields.CharField(null=True, max_length=50)),
                ('table_name', fields.CharField(null=True, max_length=50)),
                ('primary_key', fields.CharField(null=True, max_length=50)),
                ('address_metadata', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'address', 'app': 'models', 'unique_together': (('organisation', 'name'),), 'indexes': [Index(fields=['organisation_id', 'namespace'])], 'pk_attr': 'id', 'table_description': 'A dataset. `name` is the Watcher name (`db.schema.table`), and `namespace` + `name` its'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AddressLineage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='lineage_edges', on_delete=OnDelete.CASCADE)),
                ('pipeline', fields.ForeignKeyField('models.Pipeline', source_field='pipeline_id', db_constraint=True, to_field='id', related_name='lineage_edges', on_delete=OnDelete.CASCADE)),
                ('source', fields.ForeignKeyField('models.Address', source_field='source_id', db_constraint=True, to_field='id', related_name='downstream_edges', on_delete=OnDelete.CASCADE)),
                ('target', fields.ForeignKeyField('models.Address', source_field='target_id', db_constraint=True, to_field='id', related_name='upstream_edges', on_delete=OnDelete.CASCADE)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'address_lineage', 'app': 'models', 'unique_together': (('pipeline', 'source', 'target'),), 'indexes': [Index(fields=['source_id']), Index(fields=['target_id'])], 'pk_attr': 'id', 'table_description': 'An edge of the dataset graph, drawn by a pipeline: data flows source -> target.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AlertChannel',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='alert_channels', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=200)),
                ('kind', fields.CharEnumField(description='SLACK: slack\nWEBHOOK: webhook', enum_type=ChannelKind, max_length=16)),
                ('url', fields.CharField(max_length=2000)),
                ('secret', fields.CharField(null=True, max_length=100)),
                ('enabled', fields.BooleanField(default=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'alert_channel', 'app': 'models', 'unique_together': (('organisation', 'name'),), 'pk_attr': 'id', 'table_description': "Where an organisation's alerts go (anomalies, freshness, timeliness, stuck runs, queue"},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AnomalyRule',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='anomaly_rules', on_delete=OnDelete.CASCADE)),
                ('pipeline', fields.ForeignKeyField('models.Pipeline', source_field='pipeline_id', db_constraint=True, to_field='id', related_name='anomaly_rules', on_delete=OnDelete.CASCADE)),
                ('metric_field', fields.CharField(max_length=30)),
                ('z_threshold', fields.FloatField(default=3.0)),
                ('lookback_days', fields.IntField(default=30)),
                ('minimum_executions', fields.IntField(default=30)),
                ('active', fields.BooleanField(default=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'anomaly_rule', 'app': 'models', 'unique_together': (('pipeline', 'metric_field'),), 'pk_attr': 'id', 'table_description': 'Flag a run whose metric falls outside mean +- z * std of its baseline.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AnomalyResult',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='anomaly_results', on_delete=OnDelete.CASCADE)),
                ('pipeline', fields.ForeignKeyField('models.Pipeline', source_field='pipeline_id', db_constraint=True, to_field='id', related_name='anomaly_results', on_delete=OnDelete.CASCADE)),
                ('run', fields.ForeignKeyField('models.Run', source_field='run_id', db_constraint=True, to_field='id', related_name='anomaly_results', on_delete=OnDelete.CASCADE)),
                ('rule', fields.ForeignKeyField('models.AnomalyRule', source_field='rule_id', null=True, db_constraint=True, to_field='id', related_name='results', on_delete=OnDelete.SET_NULL)),
                ('metric_field', fields.CharField(max_length=30)),
                ('value', fields.FloatField()),
                ('mean', fields.FloatField()),
                ('std_dev', fields.FloatField()),
                ('z_threshold', fields.FloatField()),
                ('lower_bound', fields.FloatField()),
                ('upper_bound', fields.FloatField()),
                ('points', fields.IntField()),
                ('detected_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'anomaly_result', 'app': 'models', 'unique_together': (('run', 'metric_field'),), 'indexes': [Index(fields=['pipeline_id', 'metric_field']), Index(fields=['detected_at'])], 'pk_attr': 'id', 'table_description': 'A flagged metric of a run, with the numbers that explain it.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='FreshnessLog',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='freshness_logs', on_delete=OnDelete.CASCADE)),
                ('pipeline', fields.ForeignKeyField('models.Pipeline', source_field='pipeline_id', db_constraint=True, to_field='id', related_name='freshness_logs', on_delete=OnDelete.CASCADE)),
                ('last_dml_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('deadline_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'freshness_log', 'app': 'models', 'unique_together': (('pipeline', 'last_dml_at'),), 'indexes': [Index(fields=['created_at'])], 'pk_attr': 'id', 'table_description': 'A pipeline whose target data went stale (logged once per stale timestamp).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PipelineType',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='pipeline_types', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=150)),
                ('freshness_number', fields.IntField(null=True)),
                ('freshness_datepart', fields.CharField(null=True, max_length=10)),
                ('mute_freshness_check', fields.BooleanField(default=False)),
                ('timeliness_number', fields.IntField(null=True)),
                ('timeliness_datepart', fields.CharField(null=True, max_length=10)),
                ('mute_timeliness_check', fields.BooleanField(default=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'pipeline_type', 'app': 'models', 'unique_together': (('organisation', 'name'),), 'pk_attr': 'id', 'table_description': 'A kind of pipeline with default freshness and timeliness settings.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Task',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', null=True, db_constraint=True, to_field='id', related_name='tasks', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(max_length=40)),
                ('key', fields.CharField(null=True, unique=True, max_length=100)),
                ('payload', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharEnumField(default=TaskStatus.PENDING, description='PENDING: pending\nDONE: done\nFAILED: failed', enum_type=TaskStatus, max_length=16)),
                ('due_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('attempts', fields.IntField(default=0)),
                ('claim', fields.CharField(null=True, max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.TextField(null=True, unique=False)),
            ],
            options={'table': 'task', 'app': 'models', 'indexes': [Index(fields=['status', 'due_at']), Index(fields=['status', 'kind'])], 'pk_attr': 'id', 'table_description': 'Background work as a row with a due time (anomaly detection after a run, a freshness or'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='TimelinessLog',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='timeliness_logs', on_delete=OnDelete.CASCADE)),
                ('pipeline', fields.ForeignKeyField('models.Pipeline', source_field='pipeline_id', db_constraint=True, to_field='id', related_name='timeliness_logs', on_delete=OnDelete.CASCADE)),
                ('run', fields.ForeignKeyField('models.Run', source_field='run_id', db_constraint=True, to_field='id', related_name='timeliness_logs', on_delete=OnDelete.CASCADE)),
                ('run_status', fields.CharField(max_length=16)),
                ('deadline_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'timeliness_log', 'app': 'models', 'unique_together': (('run',),), 'indexes': [Index(fields=['created_at'])], 'pk_attr': 'id', 'table_description': 'A run that missed its timeliness deadline (logged once per run).'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Pipeline',
            name='active',
            field=fields.BooleanField(default=True, db_default=True),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='freshness_datepart',
            field=fields.CharField(null=True, max_length=10),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='freshness_number',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='input_digest',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='last_target_insert',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='last_target_soft_delete',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='last_target_update',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='load_lineage',
            field=fields.BooleanField(default=True, db_default=True),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='mute_freshness_check',
            field=fields.BooleanField(default=False, db_default=False),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='mute_timeliness_check',
            field=fields.BooleanField(default=False, db_default=False),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='next_watermark',
            field=fields.CharField(null=True, max_length=50),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='pipeline_metadata',
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='pipeline_type',
            field=fields.ForeignKeyField('models.PipelineType', source_field='pipeline_type_id', null=True, db_constraint=True, to_field='id', related_name='pipelines', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='timeliness_datepart',
            field=fields.CharField(null=True, max_length=10),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='timeliness_number',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='updated_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Pipeline',
            name='watermark',
            field=fields.CharField(null=True, max_length=50),
        ),
        ops.AddField(
            model_name='Run',
            name='anomaly_flags',
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='Run',
            name='date_recorded',
            field=fields.DateField(null=True),
        ),
        ops.AddField(
            model_name='Run',
            name='duration_seconds',
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name='Run',
            name='execution_metadata',
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='Run',
            name='hour_recorded',
            field=fields.SmallIntField(null=True),
        ),
        ops.AddField(
            model_name='Run',
            name='next_watermark',
            field=fields.CharField(null=True, max_length=50),
        ),
        ops.AddField(
            model_name='Run',
            name='throughput',
            field=fields.FloatField(null=True),
        ),
        ops.AddField(
            model_name='Run',
            name='watermark',
            field=fields.CharField(null=True, max_length=50),
        ),
        ops.AddIndex(
            model_name='Run',
            index=Index(fields=['pipeline_id', 'hour_recorded', 'started_at']),
        ),
        ops.AddIndex(
            model_name='Run',
            index=Index(fields=['parent_id']),
        ),
        ops.AddIndex(
            model_name='Run',
            index=Index(fields=['organisation_id', 'started_at']),
        ),
        ops.AlterField(
            model_name='WebhookDelivery',
            name='endpoint',
            field=fields.ForeignKeyField('models.WebhookEndpoint', source_field='endpoint_id', null=True, db_constraint=True, to_field='id', related_name='deliveries', on_delete=OnDelete.CASCADE),
        ),
        ops.AddField(
            model_name='WebhookDelivery',
            name='channel',
            field=fields.ForeignKeyField('models.AlertChannel', source_field='channel_id', null=True, db_constraint=True, to_field='id', related_name='deliveries', on_delete=OnDelete.CASCADE),
        ),
    ]
