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


class ConnectionSecret(Model):
    """One write-only secret value of a connection (an environment variable's name and its
    value, e.g. `GITHUB_TOKEN`), encrypted at rest (Fernet, `RUNWATCH_SECRETS_KEYS`). Only
    the organisation's gateways read the value, each read recorded in `SecretRead`."""

    id = fields.IntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="connection_secrets", on_delete=fields.CASCADE
    )
    connection = fields.ForeignKeyField(
        "models.Connection", related_name="secrets", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=200)
    ciphertext = fields.TextField()
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "connection_secret"
        unique_together = (("connection", "name"),)


class SecretRead(Model):
    """A gateway read a connection's secrets in clear: who (gateway, token) and when."""

    id = fields.BigIntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="secret_reads", on_delete=fields.CASCADE
    )
    connection = fields.ForeignKeyField(
        "models.Connection", related_name="secret_reads", on_delete=fields.CASCADE
    )
    gateway_id = fields.IntField(null=True)
    token_id = fields.IntField(null=True)
    names = fields.JSONField(default=list)
    read_at = fields.DatetimeField()

    class Meta:
        table = "secret_read"
