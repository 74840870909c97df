"""The shared rate limit's counters (`runwatch.resolvers.rate_limits.PostgresRateLimiter`): one
row per key and window, the window number first in the primary key so that deleting old windows
is a range on it. No model: only that module's raw statements touch the table. Created on SQLite
too (one schema for both databases), where the per-process limiter is used instead."""

from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    # At merge: depends on ("models", "0008_openlineage").
    dependencies = [("models", "0008_openlineage")]

    initial = False

    operations = [
        ops.RunSQL(
            "CREATE TABLE rate_limit_window ("
            "window_start BIGINT NOT NULL, "
            "key VARCHAR(255) NOT NULL, "
            "count INT NOT NULL, "
            "PRIMARY KEY (window_start, key))",
            reverse_sql="DROP TABLE rate_limit_window",
        ),
    ]
