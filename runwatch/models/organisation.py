from tortoise import fields
from tortoise.models import Model


class Organisation(Model):
    """A tenant. Every other row belongs to exactly one organisation."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "organisation"


class ServiceToken(Model):
    """A bearer token. Only a SHA-256 of its secret part is stored.

    The token handed out reads `rw_<key_id>_<secret>`: `key_id` finds the row through a unique
    index, the secret's hash is compared in constant time. A rotated token keeps working until
    `expires_at` (the end of the rotation's overlap window), then it is refused.
    """

    id = fields.IntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="tokens", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=200)
    key_id = fields.CharField(max_length=16, unique=True)
    secret_hash = fields.CharField(max_length=64)
    scopes = fields.CharField(max_length=200, description="comma-separated scopes")
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)
    # Set when the token is rotated: it stops working at this instant (null: never expires).
    expires_at = fields.DatetimeField(null=True)
    # When a request last authenticated with it, to within `LAST_USED_RESOLUTION` (a minute).
    last_used_at = fields.DatetimeField(null=True)
    # A gateway's token stands for that gateway (scope `gateway`) and for nothing else.
    gateway = fields.ForeignKeyField(
        "models.Gateway", related_name="tokens", null=True, on_delete=fields.CASCADE
    )

    class Meta:
        table = "service_token"
