from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0006_repair_nonfinite')]

    initial = False

    operations = [
        ops.AddField(model_name='Pipeline', name='tool',
                     field=fields.CharField(max_length=50, null=True)),
        ops.AddField(model_name='Pipeline', name='source_type',
                     field=fields.CharField(max_length=100, null=True)),
        ops.AddField(model_name='Pipeline', name='destination_type',
                     field=fields.CharField(max_length=100, null=True)),
        ops.AddField(model_name='Pipeline', name='source_configuration',
                     field=fields.JSONField(null=True)),
        ops.AddField(model_name='Pipeline', name='pipeline_code',
                     field=fields.TextField(null=True)),
        ops.AddField(model_name='Pipeline', name='config_yaml',
                     field=fields.TextField(null=True)),
        ops.AddField(model_name='Pipeline', name='workspace_yaml',
                     field=fields.TextField(null=True)),
        ops.AddField(model_name='Pipeline', name='group_name',
                     field=fields.CharField(max_length=200, null=True)),
        ops.AddField(model_name='Pipeline', name='enabled',
                     field=fields.BooleanField(default=True, db_default=True)),
        ops.CreateModel(
            name='ConnectionSecret',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='connection_secrets', on_delete=OnDelete.CASCADE)),
                ('connection', fields.ForeignKeyField('models.Connection', source_field='connection_id', db_constraint=True, to_field='id', related_name='secrets', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=200)),
                ('ciphertext', fields.TextField(unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'connection_secret', 'app': 'models', 'unique_together': (('connection', 'name'),), 'pk_attr': 'id', 'table_description': "One write-only secret value of a connection (an environment variable's name and its"},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SecretRead',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organisation', fields.ForeignKeyField('models.Organisation', source_field='organisation_id', db_constraint=True, to_field='id', related_name='secret_reads', on_delete=OnDelete.CASCADE)),
                ('connection', fields.ForeignKeyField('models.Connection', source_field='connection_id', db_constraint=True, to_field='id', related_name='secret_reads', on_delete=OnDelete.CASCADE)),
                ('gateway_id', fields.IntField(null=True)),
                ('token_id', fields.IntField(null=True)),
                ('names', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('read_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'secret_read', 'app': 'models', 'pk_attr': 'id', 'table_description': "A gateway read a connection's secrets in clear: who (gateway, token) and when."},
            bases=['Model'],
        ),
    ]
