from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class WebhookEndpoint(Model):
    """Where an organisation's terminal-run events go: the organisation's default endpoint
    (`pipeline` null) or one pipeline's (which wins over the default).

    The signing secret must be usable to sign, so it is stored as issued (`whsec_…`).
    """

    id = fields.IntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="webhook_endpoints", on_delete=fields.CASCADE
    )
    pipeline = fields.ForeignKeyField(
        "models.Pipeline", related_name="webhook_endpoints", null=True, on_delete=fields.CASCADE
    )
    url = fields.CharField(max_length=2000)
    secret = fields.CharField(max_length=100)
    event_types = fields.JSONField(default=list)
    enabled = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "webhook_endpoint"
        unique_together = (("organisation", "pipeline"),)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due at `next_attempt_at` (or being sent, until its claim expires)
    DELIVERED = "delivered"  # a 2xx answer was received
    FAILED = "failed"  # every retry failed; can be redelivered on demand


class WebhookDelivery(Model):
    """One event for one endpoint: a row with a due time, claimed by a worker, retried with
    backoff. The body is frozen when the event happens; `message_id` is the Standard Webhooks
    `webhook-id`, the same on every attempt so that receivers can deduplicate."""

    id = fields.BigIntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="webhook_deliveries", on_delete=fields.CASCADE
    )
    # A run event goes to an endpoint; an alert goes to an alert channel.
    endpoint = fields.ForeignKeyField(
        "models.WebhookEndpoint", related_name="deliveries", null=True,
        on_delete=fields.CASCADE
    )
    channel = fields.ForeignKeyField(
        "models.AlertChannel", related_name="deliveries", null=True, on_delete=fields.CASCADE
    )
    run = fields.ForeignKeyField(
        "models.Run", related_name="webhook_deliveries", null=True, on_delete=fields.SET_NULL
    )
    event_type = fields.CharField(max_length=50)
    message_id = fields.CharField(max_length=64, unique=True)
    payload = fields.JSONField()
    status = fields.CharEnumField(DeliveryStatus, max_length=16, default=DeliveryStatus.PENDING)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(null=True)
    # Set while a worker holds the delivery; a worker's result only counts if its claim stands.
    claim = fields.CharField(max_length=32, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    delivered_at = fields.DatetimeField(null=True)
    last_status_code = fields.IntField(null=True)
    last_error = fields.TextField(null=True)

    class Meta:
        table = "webhook_delivery"
        indexes = (
            ("status", "next_attempt_at"),  # workers: what is due
            ("endpoint_id", "id"),  # an endpoint's history, newest first
            ("run_id",),
        )


class WebhookAttempt(Model):
    """One HTTP attempt of a delivery: what the receiver answered, how long it took."""

    id = fields.BigIntField(primary_key=True)
    delivery = fields.ForeignKeyField(
        "models.WebhookDelivery", related_name="attempt_log", on_delete=fields.CASCADE
    )
    attempted_at = fields.DatetimeField()
    status_code = fields.IntField(null=True)
    duration_ms = fields.IntField()
    error = fields.TextField(null=True)
    response_excerpt = fields.TextField(null=True)

    class Meta:
        table = "webhook_attempt"
        indexes = (("delivery_id", "id"),)
