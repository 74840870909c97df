from tortoise import fields
from tortoise.models import Model


class Gateway(Model):
    """An agent that claims and executes runs in a customer's environment.

    It authenticates with its own tokens (`ServiceToken.gateway`); `last_seen_at`, `version` and
    `labels` come from its heartbeats. The runs it claimed time out when its heartbeats stop for
    longer than the lease (`RUNWATCH_GATEWAY_LEASE_SECONDS`).
    """

    id = fields.IntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="gateways", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=200)
    created_at = fields.DatetimeField(auto_now_add=True)
    last_seen_at = fields.DatetimeField(null=True)
    version = fields.CharField(max_length=100, null=True)
    labels = fields.JSONField(default=dict)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "gateway"
        unique_together = (("organisation", "name"),)
