"""Committed artifacts stay in step with the code: the SDL and the migrations."""

import subprocess
import sys
from pathlib import Path

from runwatch.schema.export import sdl

ROOT = Path(__file__).resolve().parent.parent


def test_schema_graphql_matches_the_code():
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == sdl(), (
        "schema.graphql is out of date: run `make schema` and review the diff"
    )


def test_migrations_match_the_models():
    # A subprocess, so that the autodetector's ORM context cannot disturb the test session's.
    code = (
        "import asyncio, json\n"
        "from runwatch.db import unmigrated_model_changes\n"
        "print(json.dumps(asyncio.run(unmigrated_model_changes())))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", (
        f"models changed without a migration: {out.stdout.strip()}; run "
        "`tortoise makemigrations` (see README) and commit the new file"
    )
