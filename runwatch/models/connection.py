from tortoise import fields
from tortoise.models import Model


class Connection(Model):
    """A warehouse endpoint an organisation delivers into. Only non-secret settings are kept."""

    id = fields.IntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="connections", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=200)
    warehouse_type = fields.CharField(max_length=50)
    settings = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "connection"
        unique_together = (("organisation", "name"),)
