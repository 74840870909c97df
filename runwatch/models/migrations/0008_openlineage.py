from tortoise import fields, migrations
from tortoise.migrations import operations as ops
from tortoise.migrations.constraints import UniqueConstraint


class Migration(migrations.Migration):
    dependencies = [('models', '0007_elt_definitions')]

    initial = False

    operations = [
        ops.AddField(model_name='Run', name='openlineage_run_id',
                     field=fields.CharField(max_length=36, null=True)),
        ops.AddField(model_name='Run', name='scheduled_at',
                     field=fields.DatetimeField(null=True)),
        ops.AddField(model_name='Run', name='openlineage_facets',
                     field=fields.JSONField(null=True)),
        ops.AddConstraint(
            model_name='Run',
            constraint=UniqueConstraint(fields=('organisation', 'openlineage_run_id'), name=None),
        ),
        ops.AddField(model_name='Pipeline', name='namespace',
                     field=fields.CharField(max_length=500, null=True)),
    ]
