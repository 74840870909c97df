from tortoise import fields
from tortoise.models import Model


class Pipeline(Model):
    """What runs. A connection's delivery pipeline has `connection` set.

    `last_success_at` and `last_delivery_at` are roll-ups written in the same transaction as
    each run outcome (each only moves forward), so that telemetry never scans run history for
    them: the failure streak is the failed runs finished after `last_success_at`.
    """

    id = fields.IntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="pipelines", on_delete=fields.CASCADE
    )
    connection = fields.ForeignKeyField(
        "models.Connection", related_name="pipelines", null=True, on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=200)
    kind = fields.CharField(max_length=30, default="delivery")
    description = fields.TextField(null=True)
    # A run of this pipeline still open this long after its start times out; null: the
    # deployment's default (`RUNWATCH_ORPHAN_WINDOW_SECONDS`).
    max_runtime_seconds = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    last_success_at = fields.DatetimeField(null=True)
    # Bumped by every change that can alter this pipeline's telemetry (a run started, an
    # outcome recorded): cached telemetry is valid while the revisions it was computed from are.
    revision = fields.BigIntField(default=0)
    last_delivery_at = fields.DatetimeField(null=True)
    # Watcher fields. `input_digest` is a stable digest (SHA-256 of canonical JSON) of the
    # definition last sent to `POST /pipeline`: an unchanged definition writes nothing.
    pipeline_type = fields.ForeignKeyField(
        "models.PipelineType", related_name="pipelines", null=True, on_delete=fields.SET_NULL
    )
    watermark = fields.CharField(max_length=50, null=True)
    next_watermark = fields.CharField(max_length=50, null=True)
    pipeline_metadata = fields.JSONField(null=True)
    last_target_insert = fields.DatetimeField(null=True)
    last_target_update = fields.DatetimeField(null=True)
    last_target_soft_delete = fields.DatetimeField(null=True)
    freshness_number = fields.IntField(null=True)
    freshness_datepart = fields.CharField(max_length=10, null=True)
    mute_freshness_check = fields.BooleanField(default=False, db_default=False)
    timeliness_number = fields.IntField(null=True)
    timeliness_datepart = fields.CharField(max_length=10, null=True)
    mute_timeliness_check = fields.BooleanField(default=False, db_default=False)
    load_lineage = fields.BooleanField(default=True, db_default=True)
    active = fields.BooleanField(default=True, db_default=True)
    updated_at = fields.DatetimeField(null=True)
    input_digest = fields.CharField(max_length=64, null=True)
    # eltPulse's definition of an ELT pipeline: what a gateway runs (`tool` with its code and
    # YAML), the source and destination it moves between, non-secret source settings.
    tool = fields.CharField(max_length=50, null=True)
    source_type = fields.CharField(max_length=100, null=True)
    destination_type = fields.CharField(max_length=100, null=True)
    source_configuration = fields.JSONField(null=True)
    pipeline_code = fields.TextField(null=True)
    config_yaml = fields.TextField(null=True)
    workspace_yaml = fields.TextField(null=True)
    group_name = fields.CharField(max_length=200, null=True)
    enabled = fields.BooleanField(default=True, db_default=True)
    # OpenLineage: the job's namespace (its name is `name`).
    namespace = fields.CharField(max_length=500, null=True)

    class Meta:
        table = "pipeline"
        unique_together = (("organisation", "name"),)
        indexes = (("connection_id", "organisation_id"),)


class PipelineHourlyStats(Model):
    """Outcomes of a pipeline's runs, summed per UTC hour of the run's finish time.

    Written in the run report's transaction (an upsert that adds), read by telemetry: a 7-day
    window reads at most 169 rows per pipeline whatever the history size.
    """

    id = fields.BigIntField(primary_key=True)
    pipeline = fields.ForeignKeyField(
        "models.Pipeline", related_name="hourly_stats", on_delete=fields.CASCADE
    )
    hour = fields.DatetimeField()
    runs_succeeded = fields.IntField(default=0)
    runs_failed = fields.IntField(default=0)
    events_total = fields.BigIntField(default=0)
    events_evaluations = fields.BigIntField(default=0)
    events_custom = fields.BigIntField(default=0)
    dlq_batches = fields.BigIntField(default=0)

    class Meta:
        table = "pipeline_hourly_stats"
        unique_together = (("pipeline", "hour"),)
