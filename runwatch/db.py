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
