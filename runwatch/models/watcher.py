"""The Watcher contract's own aggregates: pipeline types, dataset addresses and their lineage,
anomaly detection rules and results, and the logs of freshness and timeliness checks.
(Watcher pipelines and executions are `Pipeline` and `Run`.)"""

from tortoise import fields
from tortoise.models import Model


class PipelineType(Model):
    """A kind of pipeline with default freshness and timeliness settings."""

    id = fields.IntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="pipeline_types", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=150)
    freshness_number = fields.IntField(null=True)
    freshness_datepart = fields.CharField(max_length=10, null=True)
    mute_freshness_check = fields.BooleanField(default=False)
    timeliness_number = fields.IntField(null=True)
    timeliness_datepart = fields.CharField(max_length=10, null=True)
    mute_timeliness_check = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(null=True)

    class Meta:
        table = "pipeline_type"
        unique_together = (("organisation", "name"),)


class AddressType(Model):
    """A kind of dataset address (`postgres`) and its group (`database`)."""

    id = fields.IntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="address_types", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=150)
    group_name = fields.CharField(max_length=150)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(null=True)

    class Meta:
        table = "address_type"
        unique_together = (("organisation", "name"),)


class Address(Model):
    """A dataset. `name` is the Watcher name (`db.schema.table`), and `namespace` + `name` its
    OpenLineage identity when given (`postgres://host:5432` + `db.schema.table`)."""

    id = fields.IntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="addresses", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=150)
    address_type = fields.ForeignKeyField(
        "models.AddressType", related_name="addresses", on_delete=fields.RESTRICT
    )
    namespace = fields.CharField(max_length=500, null=True)
    database_name = fields.CharField(max_length=50, null=True)
    schema_name = fields.CharField(max_length=50, null=True)
    table_name = fields.CharField(max_length=50, null=True)
    primary_key = fields.CharField(max_length=50, null=True)
    address_metadata = fields.JSONField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(null=True)

    class Meta:
        table = "address"
        unique_together = (("organisation", "name"),)
        indexes = (("organisation_id", "namespace"),)


class AddressLineage(Model):
    """An edge of the dataset graph, drawn by a pipeline: data flows source -> target."""

    id = fields.BigIntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="lineage_edges", on_delete=fields.CASCADE
    )
    pipeline = fields.ForeignKeyField(
        "models.Pipeline", related_name="lineage_edges", on_delete=fields.CASCADE
    )
    source = fields.ForeignKeyField(
        "models.Address", related_name="downstream_edges", on_delete=fields.CASCADE
    )
    target = fields.ForeignKeyField(
        "models.Address", related_name="upstream_edges", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "address_lineage"
        unique_together = (("pipeline", "source", "target"),)
        indexes = (("source_id",), ("target_id",))


class AnomalyRule(Model):
    """Flag a run whose metric falls outside mean +- z * std of its baseline."""

    id = fields.IntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="anomaly_rules", on_delete=fields.CASCADE
    )
    pipeline = fields.ForeignKeyField(
        "models.Pipeline", related_name="anomaly_rules", on_delete=fields.CASCADE
    )
    metric_field = fields.CharField(max_length=30)
    z_threshold = fields.FloatField(default=3.0)
    lookback_days = fields.IntField(default=30)
    minimum_executions = fields.IntField(default=30)
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(null=True)

    class Meta:
        table = "anomaly_rule"
        unique_together = (("pipeline", "metric_field"),)


class AnomalyResult(Model):
    """A flagged metric of a run, with the numbers that explain it."""

    id = fields.BigIntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="anomaly_results", on_delete=fields.CASCADE
    )
    pipeline = fields.ForeignKeyField(
        "models.Pipeline", related_name="anomaly_results", on_delete=fields.CASCADE
    )
    run = fields.ForeignKeyField(
        "models.Run", related_name="anomaly_results", on_delete=fields.CASCADE
    )
    rule = fields.ForeignKeyField(
        "models.AnomalyRule", related_name="results", null=True, on_delete=fields.SET_NULL
    )
    metric_field = fields.CharField(max_length=30)
    value = fields.FloatField()
    mean = fields.FloatField()
    std_dev = fields.FloatField()
    z_threshold = fields.FloatField()
    lower_bound = fields.FloatField()
    upper_bound = fields.FloatField()
    points = fields.IntField()
    detected_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "anomaly_result"
        unique_together = (("run", "metric_field"),)
        indexes = (("pipeline_id", "metric_field"), ("detected_at",))


class TimelinessLog(Model):
    """A run that missed its timeliness deadline (logged once per run)."""

    id = fields.BigIntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="timeliness_logs", on_delete=fields.CASCADE
    )
    pipeline = fields.ForeignKeyField(
        "models.Pipeline", related_name="timeliness_logs", on_delete=fields.CASCADE
    )
    run = fields.ForeignKeyField(
        "models.Run", related_name="timeliness_logs", on_delete=fields.CASCADE
    )
    run_status = fields.CharField(max_length=16)
    deadline_at = fields.DatetimeField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "timeliness_log"
        unique_together = (("run",),)
        indexes = (("created_at",),)


class FreshnessLog(Model):
    """A pipeline whose target data went stale (logged once per stale timestamp)."""

    id = fields.BigIntField(primary_key=True)
    organisation = fields.ForeignKeyField(
        "models.Organisation", related_name="freshness_logs", on_delete=fields.CASCADE
    )
    pipeline = fields.ForeignKeyField(
        "models.Pipeline", related_name="freshness_logs", on_delete=fields.CASCADE
    )
    last_dml_at = fields.DatetimeField()
    deadline_at = fields.DatetimeField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "freshness_log"
        unique_together = (("pipeline", "last_dml_at"),)
        indexes = (("created_at",),)
