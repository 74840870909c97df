"""Database configuration and migrations (Tortoise's built-in migration engine)."""

from __future__ import annotations

from typing import Any

from tortoise import Tortoise
from tortoise.migrations.api import migrate as migrate_api

MODELS_MODULE = "runwatch.models"
MIGRATIONS_MODULE = "runwatch.models.migrations"


def tortoise_config(database_url: str) -> dict[str, Any]:
    return {
        "connections": {"default": database_url},
        "apps": {
            "models": {
                "models": [MODELS_MODULE],
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def apply_migrations(database_url: str) -> list[str]:
    """Apply every pending migration; returns the names applied (empty when up to date)."""
    applied: list[str] = []

    def progress(event: str, app_label: str, name: str) -> None:
        if event == "apply_done":
            applied.append(f"{app_label}.{name}")

    try:
        await migrate_api(config=tortoise_config(database_url), progress=progress)
    finally:
        await Tortoise.close_connections()
    return applied


async def unmigrated_model_changes() -> list[str]:
    """Operations `tortoise makemigrations` would write now; empty when migrations match models.

    Uses a private in-memory context, so it never touches a real database.
    """
    from tortoise.context import TortoiseContext
    from tortoise.migrations.autodetector import MigrationAutodetector

    config = tortoise_config("sqlite://:memory:")
    async with TortoiseContext() as ctx:
        await ctx.init(config=config)
        writers = await MigrationAutodetector(ctx.apps, config["apps"]).changes()
    return [f"{w.app_label}: {op.describe() if hasattr(op, 'describe') else op!r}"
            for w in writers for op in w.operations]


# For Tortoise's own CLI: `tortoise -c runwatch.db.TORTOISE_ORM makemigrations` (`make migrations`).
TORTOISE_ORM = tortoise_config("sqlite://:memory:")
