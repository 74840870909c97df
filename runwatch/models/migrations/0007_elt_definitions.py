from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0005_token_last_used')]

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
    ]
