"""The command line from a new user's seat (issue 12): one database wherever a command is run,
a clear message (never an empty file, never a traceback) on a database without schema,
`--version`, `org list`, `token list`, help on every command, and what `serve` says on a
restart. Real processes, real databases."""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from runwatch import __version__
from runwatch.cli import build_parser
from runwatch.db import migration_names
from runwatch.resolvers.tokens import authenticate, create_token, split_token
from tests.conftest import DIALECT, _create_pg_database, _drop_pg_database
from tests.test_cli import _free_port

RUNWATCH = [sys.executable, "-m", "runwatch.cli"]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user who configured nothing, with `home` as their home."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "RUNWATCH_", "XDG_", "PORT"))}
    return {**env, "HOME": str(home), **extra}


def cli(*args: str, cwd: Path, env: dict[str, str], timeout: float = 60
        ) -> subprocess.CompletedProcess:
    return subprocess.run([*RUNWATCH, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_clean_failure(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr


@pytest.fixture
def user(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "home"
    home.mkdir()
    return home, clean_env(home)


def test_a_command_before_any_database_says_what_to_run_and_creates_nothing(tmp_path, user):
    """`runwatch token create` outside the repository: no empty runwatch.db, no traceback."""
    home, env = user
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in (["token", "create", "--org", "1", "--scope", "admin"], ["org", "list"],
                 ["token", "list", "--org", "1"], ["gateway", "list", "--org", "1"]):
        out = cli(*args, cwd=elsewhere, env=env)
        assert_clean_failure(out, "runwatch migrate", "no runwatch database at",
                             str(home / ".local/share/runwatch/runwatch.db"))
    assert list(elsewhere.iterdir()) == []
    assert not (home / ".local").exists()


def test_every_command_finds_the_same_database_from_any_directory(tmp_path, user):
    home, env = user
    one, two, three = (tmp_path / d for d in ("one", "two", "three"))
    for d in (one, two, three):
        d.mkdir()
    migrated = cli("migrate", cwd=one, env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert str(home / ".local/share/runwatch/runwatch.db") in migrated.stdout
    created = cli("org", "create", "acme", cwd=two, env=env)
    assert created.returncode == 0, created.stderr
    listed = cli("org", "list", cwd=three, env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1:] == [f"{created.stdout.strip()}\tacme\t0"]
    for d in (one, two, three):
        assert not (d / "runwatch.db").exists()
    # XDG_DATA_HOME and RUNWATCH_HOME move the data directory
    xdg = cli("migrate", cwd=one, env={**env, "XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert xdg.returncode == 0 and (tmp_path / "xdg/runwatch/runwatch.db").is_file()
    own = cli("migrate", cwd=one, env={**env, "RUNWATCH_HOME": str(tmp_path / "rw")})
    assert own.returncode == 0 and (tmp_path / "rw/runwatch.db").is_file()


def test_database_url_option_before_or_after_the_command_and_over_the_environment(
        tmp_path, user):
    home, env = user
    chosen = f"sqlite://{tmp_path}/chosen.db"
    decoy = {**env, "DATABASE_URL": f"sqlite://{tmp_path}/decoy.db"}
    assert cli("--database-url", chosen, "migrate", cwd=tmp_path, env=decoy).returncode == 0
    made = cli("org", "create", "beta", "--database-url", chosen, cwd=tmp_path, env=decoy)
    assert made.returncode == 0, made.stderr
    listed = cli("org", "list", cwd=tmp_path, env={**env, "DATABASE_URL": chosen})
    assert "\tbeta\t" in listed.stdout, listed.stderr
    assert not (tmp_path / "decoy.db").exists()
    assert not (home / ".local").exists()


def test_an_existing_runwatch_db_in_the_working_directory_keeps_being_used(tmp_path, user):
    """The migration path: `./runwatch.db` from before the data directory is still found (from
    that directory), with a note that says how to move it."""
    home, env = user
    legacy = f"sqlite://{tmp_path}/runwatch.db"
    assert cli("--database-url", legacy, "migrate", cwd=tmp_path, env=env).returncode == 0
    assert cli("--database-url", legacy, "org", "create", "old", cwd=tmp_path,
               env=env).returncode == 0
    listed = cli("org", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "\told\t" in listed.stdout, listed.stderr
    assert "using ./runwatch.db in the working directory" in listed.stderr
    assert str(home / ".local/share/runwatch") in listed.stderr  # where to move it
    assert not (home / ".local").exists()


def test_a_database_without_schema_gets_a_message_not_a_traceback(tmp_path, user):
    _home, env = user
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # an existing file with no tables
    out = cli("--database-url", f"sqlite://{empty}", "org", "list", cwd=tmp_path, env=env)
    assert_clean_failure(out, "has no runwatch schema yet", "runwatch migrate")
    unreachable = cli("--database-url", f"postgres://postgres@127.0.0.1:{_free_port()}/x",
                      "token", "list", "--org", "1", cwd=tmp_path, env=env)
    assert_clean_failure(unreachable, "cannot use PostgreSQL 127.0.0.1:")


@pytest.mark.skipif(DIALECT != "postgres", reason="a PostgreSQL database without schema")
async def test_a_postgres_database_without_schema_gets_a_message(tmp_path, user):
    _home, env = user
    name, url = await _create_pg_database()
    try:
        out = cli("--database-url", url, "org", "list", cwd=tmp_path, env=env)
        assert_clean_failure(out, "has no runwatch schema yet", "runwatch migrate")
        conn = await asyncpg.connect(url.replace("asyncpg://", "postgres://").split("?")[0])
        try:  # and the check wrote nothing
            tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = "
                                      "'public'")
        finally:
            await conn.close()
        assert tables == []
    finally:
        await _drop_pg_database(name)


async def test_pending_migrations_are_named_with_the_command(database_url, app, tmp_path, user):
    from tortoise import connections

    _home, env = user
    conn = connections.get("default")
    last = migration_names()[-1]
    await conn.execute_script(f"DELETE FROM tortoise_migrations WHERE name = '{last}'")
    try:
        out = cli("--database-url", database_url, "org", "list", cwd=tmp_path, env=env)
        assert_clean_failure(out, f"needs migrations ({last})", "runwatch migrate")
    finally:
        await conn.execute_query(
            "INSERT INTO tortoise_migrations (app, name, applied_at) VALUES "
            + ("($1, $2, $3)" if DIALECT == "postgres" else "(?, ?, ?)"),
            ["models", last, datetime.now(UTC)])


def test_version(tmp_path, user):
    out = cli("--version", cwd=tmp_path, env=user[1])
    assert out.returncode == 0 and out.stdout.strip() == f"runwatch {__version__}"


async def test_org_list_and_token_list_never_show_a_secret(database_url, app, client, tenant,
                                                           tmp_path, user):
    from runwatch.models import ServiceToken

    env = {**user[1], "DATABASE_URL": database_url}
    loader = await create_token(organisation_id=tenant.org_id, scopes="report",
                                name="nightly loader")
    rotated = cli("token", "revoke", str(loader.id), cwd=tmp_path, env=env)
    assert rotated.returncode == 0, rotated.stderr
    r = await client.post("/graphql", json={"query": "{ connections { nodes { id } } }"},
                          headers=tenant.headers("read"))
    assert r.status_code == 200

    orgs = cli("org", "list", cwd=tmp_path, env=env)
    assert orgs.returncode == 0, orgs.stderr
    assert orgs.stdout.splitlines() == [
        "id\tname\tlive tokens", f"{tenant.org_id}\torg-a\t{len(tenant.tokens)}"]

    listed = cli("token", "list", "--org", str(tenant.org_id), cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header == "id\tname\tscopes\tcreated\tlast used\tstate"
    by_id = {int(row.split("\t")[0]): row.split("\t") for row in rows}
    stored = {t.id: t for t in await ServiceToken.filter(organisation_id=tenant.org_id)}
    assert set(by_id) == set(stored)
    read_id = (await authenticate(tenant.tokens["read"])).token_id
    assert by_id[read_id][2] == "read" and by_id[read_id][5] == "active"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", by_id[read_id][4]), by_id[read_id]
    assert by_id[loader.id][1:3] == ["nightly loader", "report"]
    assert by_id[loader.id][4] == "never" and by_id[loader.id][5].startswith("revoked ")
    for token in (*tenant.tokens.values(), loader.token):
        # The whole secret, as the token's parser reads it (it may itself hold "_": the tail
        # after the last one can be a single character, found in any output by chance).
        parts = split_token(token)
        assert parts is not None and len(parts[1]) >= 32, token
        assert parts[1] not in listed.stdout and token not in listed.stdout
    for row in stored.values():
        assert row.secret_hash not in listed.stdout
    unknown = cli("token", "list", "--org", "999999", cwd=tmp_path, env=env)
    assert_clean_failure(unknown, "organisation 999999 not found")


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaf_parsers(child, (*path, name))


def test_every_command_and_flag_has_help(tmp_path, user):
    leaves = list(_leaf_parsers(build_parser()))
    assert {" ".join(p) for p, _ in leaves} >= {
        "serve", "worker", "migrate", "demo", "org create", "org list", "token create",
        "token list", "token revoke", "token rotate", "token generate", "gateway create",
        "gateway token", "gateway revoke", "gateway list"}
    for path, parser in leaves:
        assert parser.description, path
        for action in parser._actions:
            assert action.help, (path, action.dest)
    out = cli("serve", "--help", cwd=tmp_path, env=user[1])
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "--host HOST address to listen on" in text and "--port PORT port to listen on" in text
    assert "--database-url URL" in text


def _serve_until_bound(args: list[str], cwd: Path, env: dict[str, str],
                       argv: list[str] | None = None) -> tuple[subprocess.Popen, list[str]]:
    """Start `runwatch serve …` (or `argv`), read its output until it listens."""
    proc = subprocess.Popen(argv or [*RUNWATCH, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            break
        lines.append(line.rstrip())
        if "Uvicorn running" in line:
            break
    return proc, lines


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout:
        proc.stdout.close()


def test_serve_on_restart_says_what_is_true(tmp_path, user):
    """Organisation 1 exists: no advice to create one, but how to get a token for it."""
    _home, env = user
    assert cli("migrate", cwd=tmp_path, env=env).returncode == 0
    assert cli("org", "create", "default", cwd=tmp_path, env=env).returncode == 0
    port = _free_port()
    proc, lines = _serve_until_bound(["serve", "--port", str(port)], tmp_path, env)
    try:
        output = "\n".join(lines)
        assert "Uvicorn running" in output, output
        assert "org create" not in output
        assert "Organisations: 1 ('default', 0 live tokens)." in output
        assert "runwatch token create --org 1 --scope admin" in output
        assert "runwatch token list --org 1" in output
        assert not any(x.strip().startswith("rw_") for x in lines)  # no token was made
    finally:
        _stop(proc)


def test_serve_with_an_operator_token_stores_it_and_never_prints_it(tmp_path, user):
    _home, env = user
    token = cli("token", "generate", cwd=tmp_path, env=env).stdout.strip()
    assert re.fullmatch(r"rw_[0-9a-f]{12}_[\w-]{40,}", token), token
    port = _free_port()
    proc, lines = _serve_until_bound(["serve", "--port", str(port)], tmp_path,
                                     {**env, "RUNWATCH_BOOTSTRAP_TOKEN": token})
    try:
        output = "\n".join(lines)
        assert "with the admin token given in RUNWATCH_BOOTSTRAP_TOKEN" in output, output
        secret = token.split("_", 2)[2]  # rw_<key>_<secret>; the secret may hold "_" itself
        assert token not in output and secret not in output
        r = httpx.post(f"http://127.0.0.1:{port}/graphql",
                       json={"query": "{ connections { nodes { id } } }"},
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.json()["data"] == {"connections": {"nodes": []}}
    finally:
        _stop(proc)
    bad = cli("migrate", cwd=tmp_path, env={**env, "RUNWATCH_BOOTSTRAP_TOKEN": "hunter2"})
    assert_clean_failure(bad, "RUNWATCH_BOOTSTRAP_TOKEN must read rw_")
    assert "hunter2" not in bad.stderr


def test_where_the_database_lives(tmp_path):
    from runwatch.settings import default_database

    assert default_database({"HOME": "/h"}, cwd=tmp_path) == (
        "sqlite:///h/.local/share/runwatch/runwatch.db", None)
    assert default_database({"HOME": "/h", "XDG_DATA_HOME": "/x"}, cwd=tmp_path) == (
        "sqlite:///x/runwatch/runwatch.db", None)
    own = {"HOME": "/h", "RUNWATCH_HOME": str(tmp_path / "rw")}
    assert default_database(own, cwd=tmp_path) == (f"sqlite://{tmp_path}/rw/runwatch.db", None)
    assert default_database({}, cwd=tmp_path) == ("sqlite://runwatch.db", None)  # no home
    (tmp_path / "runwatch.db").touch()  # an installation from before the data directory
    url, note = default_database({"HOME": "/h"}, cwd=tmp_path)
    assert url == f"sqlite://{tmp_path}/runwatch.db" and "mkdir -p /h/.local/share/runwatch" in note
    assert default_database(own, cwd=tmp_path)[0] == f"sqlite://{tmp_path}/rw/runwatch.db"
