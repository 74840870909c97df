"""Database faults: lost connections answer 503 in each contract's shape and the service heals
by itself; SQLite writers in several processes wait for each other instead of failing.

PostgreSQL. While clients keep writing (warehouse reports, ELT log appends, Watcher
executions) and reading (GraphQL), a separate admin connection terminates every backend of the
test database (`pg_terminate_backend`), twice. Every answer is a success or a 503 in the
route's own shape with `Retry-After` (never a 500, never a hang: every request is bounded);
every request sent 5 s after the last kill succeeds, with no restart; every write that was
acknowledged is in the database afterwards. Once against the in-process app, once against
`runwatch serve` as a real process on a fresh database with its workers on, whose webhook
worker and stuck-run reaper then do their work again. A real server restart
(`pg_ctlcluster … restart`) would disrupt every other test run on the shared server, so it is
not done: terminating the backends is the same fault as far as the service can tell (every
pooled connection is gone at once; while a server restarts, connecting fails with
`CannotConnectNowError` or a refused connection, which `runwatch.faults` classifies the same
way).

SQLite. Fifty concurrent ELT appends and fifty warehouse reports in-process while a second OS
process writes the same file through the ORM (transactions that read, then write): nobody
sees "database is locked" (no 5xx at all) and every acknowledged write is stored. And a lock
held longer than the busy timeout answers 503 in each contract's shape, then heals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from tortoise import connections
from tortoise.transactions import in_transaction

from runwatch import faults
from runwatch.models import Organisation, Run, RunLogLine, RunStatus
from tests.conftest import ADMIN_PG_URL, DIALECT, Tenant
from tests.helpers import create_connection, iso
from tests.webhook_receiver import Receiver

POSTGRES = pytest.mark.skipif(
    DIALECT != "postgres",
    reason="kills PostgreSQL backends: runs with RUNWATCH_TEST_DB=postgres")
SQLITE = pytest.mark.skipif(
    DIALECT != "sqlite", reason="SQLite file locking: runs with RUNWATCH_TEST_DB=sqlite")

REQUEST_TIMEOUT = 15.0  # a request that takes longer has hung
RECOVERY = 5.0  # seconds after a fault by which every request succeeds again
ELT = "/api/elt"
APPENDS_PER_RUN = 400  # under the ELT contract's 500-line cap: no line falls out


# ----------------------------------------------------------------------------------------------
# classification


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        raise exc from cause
    except BaseException as caught:
        return caught


def test_what_counts_as_the_database_being_unavailable():
    lost = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    assert faults.database_unavailable(lost)
    assert faults.database_unavailable(asyncpg.AdminShutdownError("terminating connection"))
    assert faults.database_unavailable(asyncpg.CannotConnectNowError("the system is starting"))
    assert faults.database_unavailable(asyncpg.TooManyConnectionsError("too many clients"))
    assert faults.database_unavailable(asyncpg.InterfaceError("connection is closed"))
    # a rollback that failed on the dead connection, raised while handling the lost query
    rollback = asyncpg.InterfaceError(
        "cannot call Transaction.rollback(): the underlying connection is closed")
    rollback.__context__ = lost
    assert faults.database_unavailable(rollback)
    assert faults.database_unavailable(_raised(RuntimeError("wrapped"), lost))
    assert faults.database_unavailable(ExceptionGroup("many", [ValueError(), lost]))
    from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError

    assert faults.database_unavailable(DBConnectionError("can't connect"))
    assert faults.database_unavailable(OperationalError(sqlite3.OperationalError(
        "database is locked")))
    # failures that are not the database being away
    assert not faults.database_unavailable(asyncpg.InterfaceError(
        "cannot perform operation: another operation is in progress"))
    assert not faults.database_unavailable(asyncpg.ProtocolViolationError("bad message"))
    assert not faults.database_unavailable(OperationalError(asyncpg.UndefinedTableError("x")))
    assert not faults.database_unavailable(IntegrityError("duplicate key"))
    assert not faults.database_unavailable(sqlite3.OperationalError("no such table: x"))
    assert not faults.database_unavailable(ValueError("database is locked"))
    # an OSError is the database's only when asyncpg raised it (not a webhook's)
    assert not faults.database_unavailable(_raised(ConnectionRefusedError(111, "refused")))


async def test_a_refused_postgresql_connection_counts():
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError) as refused:
        await asyncpg.connect(host="127.0.0.1", port=port, user="x", timeout=5)
    assert faults.database_unavailable(refused.value)


# ----------------------------------------------------------------------------------------------
# load, outcomes and their shapes


@dataclass
class Outcome:
    kind: str
    started: float
    status: int | None  # None: no answer within REQUEST_TIMEOUT, or the client failed
    body: Any = None
    retry_after: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def shape_problem(o: Outcome) -> str | None:
    """What is wrong with an outcome under a fault: anything but a 2xx or a 503 in the
    contract's own shape with `Retry-After`."""
    if o.status is None:
        return f"{o.kind}: no answer ({o.error})"
    if o.ok:
        if o.kind == "graphql" and (not isinstance(o.body, dict) or o.body.get("errors")):
            return f"graphql: {o.status} with errors {o.body}"
        return None
    if o.status != 503:
        return f"{o.kind}: {o.status} {str(o.body)[:300]}"
    if not (o.retry_after or "").isdigit():
        return f"{o.kind}: 503 without Retry-After"
    if o.kind == "graphql":
        errors = o.body.get("errors") if isinstance(o.body, dict) else None
        if not errors or any(e.get("extensions", {}).get("code") != "SERVICE_UNAVAILABLE"
                             or e.get("message") != faults.MESSAGE for e in errors):
            return f"graphql: 503 {o.body}"
        return None
    key = "error" if o.kind == "elt" else "detail"
    if o.body != {key: faults.MESSAGE}:
        return f"{o.kind}: 503 {o.body}"
    return None


@dataclass
class Load:
    """Clients that keep calling until stopped, and what they were told."""

    client: httpx.AsyncClient
    outcomes: list[Outcome] = field(default_factory=list)
    appended: set[str] = field(default_factory=set)  # acknowledged ELT log lines
    reported: dict[int, int] = field(default_factory=dict)  # warehouse run -> events reported
    started_executions: set[int] = field(default_factory=set)
    ended_executions: set[int] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def call(self, kind: str, method: str, url: str, token: str,
                   body: Any = None) -> Outcome:
        started = time.monotonic()
        try:
            r = await asyncio.wait_for(self.client.request(
                method, url, json=body, headers={"Authorization": f"Bearer {token}"}),
                REQUEST_TIMEOUT)
        except Exception as exc:  # a hang (TimeoutError) or a broken connection
            outcome = Outcome(kind, started, None, error=f"{type(exc).__name__}: {exc}")
        else:
            try:
                parsed: Any = r.json() if r.content else None
            except ValueError:
                parsed = r.text
            outcome = Outcome(kind, started, r.status_code, parsed, r.headers.get("retry-after"))
        self.outcomes.append(outcome)
        return outcome

    async def loop(self, step: Callable[[], Awaitable[None]]) -> None:
        while not self.stop.is_set():
            await step()
            await asyncio.sleep(0)

    # ---- the workloads

    async def elt_appender(self, tenant: Tenant, pipeline_id: str, name: str) -> None:
        token = tenant.tokens["write"]
        run_id: str | None = None
        lines = 0
        i = 0

        async def step() -> None:
            nonlocal run_id, lines, i
            if run_id is None or lines >= APPENDS_PER_RUN:
                o = await self.call("elt", "POST", f"{ELT}/runs", token,
                                    {"pipelineId": pipeline_id, "status": "running"})
                if o.ok:
                    run_id, lines = o.body["run"]["id"], 0
                return
            i += 1
            message = f"{name}-{i}"
            o = await self.call("elt", "PATCH", f"{ELT}/runs/{run_id}", token,
                                {"appendLog": {"message": message}})
            lines += 1  # sent: it may be stored even if the answer was a 503
            if o.ok:
                self.appended.add(message)

        await self.loop(step)

    async def reporter(self, tenant: Tenant, cid: int) -> None:
        token = tenant.tokens["report"]
        base = f"{tenant.prefix}/{cid}/metrics/"
        n = 0

        async def step() -> None:
            nonlocal n
            started = datetime.now(UTC) - timedelta(minutes=10)
            o = await self.call("report", "POST", base, token, {"started_at": iso(started)})
            if not o.ok:
                return
            run_id, n = o.body["run_id"], n + 1
            events = 1000 + n
            o = await self.call("report", "PATCH", f"{base}{run_id}/", token, {
                "completed_at": iso(started + timedelta(minutes=5)),
                "events_delivered": events, "batches_dlq": 0, "error": None})
            if o.ok:
                self.reported[run_id] = events

        await self.loop(step)

    async def watcher(self, tenant: Tenant, pipeline_id: int) -> None:
        token = tenant.tokens["write"]

        async def step() -> None:
            start = datetime.now(UTC) - timedelta(minutes=1)
            o = await self.call("watcher", "POST", "/start_pipeline_execution", token,
                                {"pipeline_id": pipeline_id, "start_date": iso(start)})
            if not o.ok:
                return
            execution = o.body["id"]
            self.started_executions.add(execution)
            o = await self.call("watcher", "POST", "/end_pipeline_execution", token, {
                "id": execution, "end_date": iso(start + timedelta(seconds=30)),
                "completed_successfully": True})
            if o.ok:
                self.ended_executions.add(execution)

        await self.loop(step)

    async def graphql(self, tenant: Tenant) -> None:
        token = tenant.tokens["read"]
        query = {"query": "{ connections { nodes { id name } } }"}

        async def step() -> None:
            await self.call("graphql", "POST", "/graphql", token, query)

        await self.loop(step)


def check_outcomes(load: Load, last_fault: float, kinds: set[str]) -> dict[str, int]:
    """Every outcome a success or a well-shaped 503; everything sent RECOVERY seconds after the
    last fault a success, and something of every kind was. Returns the 503s per kind."""
    problems = [p for o in load.outcomes if (p := shape_problem(o))]
    assert not problems, problems[:10]
    late = [o for o in load.outcomes if o.started >= last_fault + RECOVERY]
    failed_late = [(o.kind, o.status, o.body) for o in late if not o.ok]
    assert not failed_late, failed_late[:10]
    assert {o.kind for o in late} == kinds, "some clients sent nothing after the recovery"
    unavailable: dict[str, int] = {k: 0 for k in kinds}
    for o in load.outcomes:
        if o.status == 503:
            unavailable[o.kind] += 1
    return unavailable


# ----------------------------------------------------------------------------------------------
# PostgreSQL: killing the backends


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/").split("?", 1)[0]


async def kill_backends(database: str) -> int:
    """Terminate every backend of `database` from an admin connection; how many there were."""
    admin = await asyncpg.connect(ADMIN_PG_URL.replace("asyncpg://", "postgres://"), timeout=5)
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
    finally:
        await admin.close()
    return sum(1 for r in rows if r["killed"])


async def run_with_faults(load: Load, workers: list[Awaitable[None]], database: str,
                          ) -> tuple[float, list[int]]:
    """Start the clients, kill the database's backends twice under load, keep the clients
    going for RECOVERY + 1.5 s after the last kill, stop them. Returns the time of the last
    kill and how many backends each kill ended."""
    tasks = [asyncio.ensure_future(w) for w in workers]
    killed: list[int] = []
    try:
        await asyncio.sleep(1.0)
        for _ in range(2):
            killed.append(await kill_backends(database))
            last = time.monotonic()
            await asyncio.sleep(1.5)
        await asyncio.sleep(max(0.0, last + RECOVERY + 1.5 - time.monotonic()))
    finally:
        load.stop.set()
        done, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT * 2 + 5)
        for task in pending:
            task.cancel()
    assert not pending, "a client did not stop"
    for task in done:
        task.result()  # a client that crashed fails the test
    return last, killed


@POSTGRES
async def test_killed_connections_answer_503_and_heal_in_process(app, database_url, tenant):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a 500 is an answer
    async with httpx.AsyncClient(transport=transport, base_url="http://runwatch.test") as client:
        load = Load(client)
        write = {"Authorization": f"Bearer {tenant.tokens['write']}"}
        r = await client.post(f"{ELT}/pipelines", json={"name": "loader"}, headers=write)
        assert r.status_code == 201, r.text
        elt_pipeline = r.json()["pipeline"]["id"]
        cids = [await create_connection(client, tenant, f"warehouse-{i}") for i in range(3)]
        watcher_pipelines = []
        for i in range(3):
            r = await client.post("/pipeline", headers=write, json={
                "name": f"watched-{i}", "pipeline_type_name": "extraction"})
            assert r.status_code == 201, r.text
            watcher_pipelines.append(r.json()["id"])
        workers = [
            *(load.elt_appender(tenant, elt_pipeline, f"w{i}") for i in range(3)),
            *(load.reporter(tenant, cid) for cid in cids),
            *(load.watcher(tenant, pid) for pid in watcher_pipelines),
            *(load.graphql(tenant) for _ in range(3)),
        ]
        last, killed = await run_with_faults(load, workers, database_name(database_url))

    assert all(killed), f"a kill found no backend of the app's database: {killed}"
    unavailable = check_outcomes(load, last, {"elt", "report", "watcher", "graphql"})
    print(f"\nin-process: {len(load.outcomes)} requests, 503s {unavailable}, killed {killed}")

    # the pool has every connection back (a failed BEGIN once kept its connection for good)
    pool = connections.get("default")._pool
    held = []
    try:
        for _ in range(connections.get("default").pool_maxsize):
            held.append(await asyncio.wait_for(pool.acquire(), 5))
    finally:
        for connection in held:
            await pool.release(connection)

    # nothing acknowledged is lost
    stored = set(await RunLogLine.all().values_list("message", flat=True))
    assert load.appended and load.appended <= stored, len(load.appended - stored)
    runs = {r.id: r for r in await Run.filter(id__in=list(load.reported))}
    assert load.reported and all(
        runs[i].status == RunStatus.SUCCEEDED and runs[i].events_delivered == events
        for i, events in load.reported.items())
    executions = {r.id: r for r in await Run.filter(id__in=list(load.started_executions))}
    assert set(executions) == load.started_executions
    assert load.ended_executions and all(
        executions[i].finished_at is not None for i in load.ended_executions)


@POSTGRES
async def test_a_transaction_whose_begin_fails_gives_its_connection_back(app, monkeypatch):
    """A BEGIN on a connection that just died: the connection goes back to the pool (which
    replaces it) and the task's connection stays the pool, not the dead transaction."""
    from tortoise.backends.asyncpg.client import TransactionWrapper

    async def lost(self: Any) -> None:
        raise asyncpg.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation")

    client = connections.get("default")
    async with asyncio.timeout(15):  # a leak exhausts the pool: the next acquire hangs
        monkeypatch.setattr(TransactionWrapper, "begin", lost)
        for _ in range(client.pool_maxsize + 1):
            with pytest.raises(asyncpg.ConnectionDoesNotExistError):
                async with in_transaction():
                    pass
        monkeypatch.undo()
        assert connections.get("default") is client
        async with in_transaction() as tx:
            await Organisation.create(name="after", using_db=tx)
    assert await Organisation.filter(name="after").exists()


# ---- `runwatch serve` as a real process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(url: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "runwatch.cli", *args], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "DATABASE_URL": url})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@contextlib.asynccontextmanager
async def fresh_pg_database() -> AsyncIterator[tuple[str, str]]:
    from tests.conftest import _create_pg_database, _drop_pg_database

    name, url = await _create_pg_database()
    try:
        yield name, url
    finally:
        await _drop_pg_database(name)


@contextlib.asynccontextmanager
async def serving(url: str, log: Path, **env: str) -> AsyncIterator[str]:
    """`runwatch serve` on a free loopback port until the block ends; yields its base URL."""
    port = _free_port()
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("DATABASE_URL", "RUNWATCH_"))}
    environment.update(DATABASE_URL=url, **env)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runwatch.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port)], env=environment, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as probe:
            while True:
                assert proc.poll() is None, f"serve exited:\n{log.read_text()[-3000:]}"
                with contextlib.suppress(httpx.HTTPError):
                    if (await probe.get(f"{base}/health")).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"serve never answered:\n{log.read_text()}"
                await asyncio.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll `check` until true; returns the seconds it took."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, f"{what} not within {timeout}s"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


@POSTGRES
async def test_killed_connections_heal_in_a_real_server_and_its_workers_resume(tmp_path):
    async with fresh_pg_database() as (name, url), Receiver.running() as receiver, serving(
        url, tmp_path / "serve.log",
        RUNWATCH_REAPER_INTERVAL_SECONDS="1", RUNWATCH_WEBHOOK_POLL_SECONDS="1",
        RUNWATCH_WEBHOOK_ALLOW_PRIVATE="1", RUNWATCH_RATE_LIMIT_PER_MINUTE="0",
    ) as base:
        org = int(_cli(url, "org", "create", "faults"))
        token = _cli(url, "token", "create", "--org", str(org), "--scope", "read,write,report")
        tokens = dict.fromkeys(("read", "write", "report"), token)
        tenant = Tenant(org_id=org, tokens=tokens)
        async with httpx.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT) as client:
            write = {"Authorization": f"Bearer {tokens['write']}"}
            r = await client.post(f"{ELT}/pipelines", json={"name": "loader"}, headers=write)
            assert r.status_code == 201, r.text
            pipeline = r.json()["pipeline"]["id"]
            r = await client.put(f"{ELT}/runs/webhook", json={"url": receiver.url + "/hook"},
                                 headers=write)
            assert r.status_code == 200, r.text
            cid = await create_connection(client, tenant, "warehouse")

            load = Load(client)
            workers = [*(load.elt_appender(tenant, pipeline, f"s{i}") for i in range(3)),
                       load.reporter(tenant, cid), load.graphql(tenant)]
            last, killed = await run_with_faults(load, workers, name)
            assert all(killed), killed
            unavailable = check_outcomes(load, last, {"elt", "report", "graphql"})
            print(f"\nserve: {len(load.outcomes)} requests, 503s {unavailable}, killed {killed}")

            # the workers' connections were killed too: both loops work again
            before = len(receiver.requests)
            r = await client.post(f"{ELT}/runs", headers=write,
                                  json={"pipelineId": pipeline, "status": "running"})
            assert r.status_code == 201, r.text
            finished = r.json()["run"]["id"]
            r = await client.patch(f"{ELT}/runs/{finished}", headers=write,
                                   json={"status": "succeeded"})
            assert r.status_code == 200, r.text
            stuck = (await client.post(f"{ELT}/runs", headers=write, json={
                "pipelineId": pipeline, "status": "running"})).json()["run"]["id"]
            await kill_backends(name)  # once more, with the workers idle
            db = await asyncpg.connect(url.replace("asyncpg://", "postgres://"), timeout=5)
            try:
                await db.execute("UPDATE run SET deadline_at = now() - interval '1 minute' "
                                 "WHERE id = $1", int(stuck))

                async def delivered() -> bool:
                    return any(json.loads(q.body).get("runId") == finished
                               for q in receiver.requests[before:])

                async def timed_out() -> bool:
                    row = await db.fetchrow("SELECT status FROM run WHERE id = $1", int(stuck))
                    return row["status"] == RunStatus.TIMED_OUT.value

                await wait_until(delivered, 15, "the webhook of a run finished after the fault")
                await wait_until(timed_out, 15, "the reaper timing out a stuck run")

                # nothing acknowledged is lost
                stored = {r["message"] for r in await db.fetch("SELECT message FROM run_log_line")}
                assert load.appended and load.appended <= stored, len(load.appended - stored)
                rows = await db.fetch("SELECT id, status, events_delivered FROM run "
                                      "WHERE id = ANY($1::bigint[])", list(load.reported))
                assert len(rows) == len(load.reported) and all(
                    r["status"] == "succeeded" and r["events_delivered"] == load.reported[r["id"]]
                    for r in rows)
            finally:
                await db.close()


# ----------------------------------------------------------------------------------------------
# SQLite: writers in two processes


def sqlite_path(url: str) -> str:
    return url.split("://", 1)[1].split("?", 1)[0]


SECOND_WRITER = textwrap.dedent("""
    import asyncio, json, os, sys, time
    from tortoise import Tortoise
    from tortoise.transactions import in_transaction
    from runwatch.db import tortoise_config
    from runwatch.models import Organisation
    from runwatch.resolvers import elt_runs
    from runwatch.resolvers.caller import Caller, Scope
    from runwatch.resolvers.clock import utcnow
    from runwatch.resolvers.run_input import parse_change

    async def main(url, org_id, run_id, stop):
        await Tortoise.init(config=tortoise_config(url))
        caller = Caller(organisation_id=org_id, scopes=frozenset({Scope.ADMIN}))
        acked, failures, times = [], [], []
        print("ready", flush=True)
        deadline = time.monotonic() + 60
        i = 0
        while not os.path.exists(stop) and time.monotonic() < deadline and i < 400:
            i += 1
            try:
                async with in_transaction() as conn:  # reads, then writes
                    n = await Organisation.all().using_db(conn).count()
                    await Organisation.create(name=f"second-{i}-{n}", using_db=conn)
                await elt_runs.update_run(caller=caller, run_id=run_id, change=parse_change(
                    {"append_log": {"message": f"second-{i}"}}, now=utcnow()))
                acked.append(f"second-{i}")
                times.append(time.time())
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
        await Tortoise.close_connections()
        print(json.dumps({"acked": acked, "failures": failures, "times": times}), flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
""")


@SQLITE
async def test_concurrent_writers_in_two_processes_never_see_a_locked_database(
        client, tenant, database_url, tmp_path):
    write = tenant.headers("write")
    r = await client.post(f"{ELT}/pipelines", json={"name": "loader"}, headers=write)
    pipeline = r.json()["pipeline"]["id"]

    async def new_run() -> str:
        r = await client.post(f"{ELT}/runs", headers=write,
                              json={"pipelineId": pipeline, "status": "running"})
        assert r.status_code == 201, r.text
        return r.json()["run"]["id"]

    runs = [await new_run() for _ in range(5)]
    theirs = await new_run()
    cid = await create_connection(client, tenant)
    base = f"{tenant.prefix}/{cid}/metrics/"

    stop = tmp_path / "stop"
    other = subprocess.Popen(
        [sys.executable, "-c", SECOND_WRITER, database_url, str(tenant.org_id), theirs,
         str(stop)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    answers: list[httpx.Response] = []
    appended: set[str] = set()
    reported: dict[int, int] = {}
    try:
        ready = await asyncio.wait_for(asyncio.to_thread(other.stdout.readline), 60)
        assert ready.strip() == "ready", other.stderr.read()
        load_started = time.time()

        async def append(i: int) -> None:
            message = f"first-{i}"
            r = await client.patch(f"{ELT}/runs/{runs[i % len(runs)]}", headers=write,
                                   json={"appendLog": {"message": message}})
            answers.append(r)
            if r.status_code == 200:
                appended.add(message)

        async def report(i: int) -> None:
            started = datetime.now(UTC) - timedelta(minutes=10)
            r = await client.post(base, json={"started_at": iso(started)},
                                  headers=tenant.headers("report"))
            answers.append(r)
            if r.status_code != 201:
                return
            run_id = r.json()["run_id"]
            r = await client.patch(f"{base}{run_id}/", headers=tenant.headers("report"), json={
                "completed_at": iso(started + timedelta(minutes=5)), "events_delivered": i,
                "batches_dlq": 0, "error": None})
            answers.append(r)
            if r.status_code == 204:
                reported[run_id] = i

        for rnd in range(4):  # 4 rounds of 50 + 50 at once
            await asyncio.wait_for(asyncio.gather(
                *(append(rnd * 50 + i) for i in range(50)),
                *(report(rnd * 50 + i) for i in range(50))), 120)
        load_ended = time.time()
    finally:
        stop.touch()
        try:
            out, err = await asyncio.to_thread(other.communicate, timeout=60)
        except subprocess.TimeoutExpired:
            other.kill()
            out, err = other.communicate(timeout=10)
    assert other.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])

    bad = [(r.status_code, r.text) for r in answers if r.status_code >= 300]
    assert not bad, bad[:10]
    assert not summary["failures"], summary["failures"][:5]
    overlap = [t for t in summary["times"] if load_started <= t <= load_ended]
    assert overlap, "the second process wrote nothing while the first one did"
    # everything acknowledged, by either process, is stored
    stored = set(await RunLogLine.all().values_list("message", flat=True))
    assert len(appended) == 200 and appended <= stored
    assert set(summary["acked"]) <= stored
    done = {r.id: r for r in await Run.filter(id__in=list(reported))}
    assert len(reported) == 200 and all(
        done[i].status == RunStatus.SUCCEEDED and done[i].events_delivered == n
        for i, n in reported.items())
    print(f"\nsqlite: {len(answers)} answers in-process, {len(summary['acked'])} writes by the "
          f"second process ({len(overlap)} during the load)")


@SQLITE
async def test_a_lock_held_past_the_busy_timeout_is_a_503_in_each_shape(
        client, tenant, database_url):
    """Another process holding the write lock longer than the busy timeout (shortened here)
    is a fault like a lost connection: 503 in the contract's shape, then fine again."""
    write = tenant.headers("write")
    r = await client.post(f"{ELT}/pipelines", json={"name": "loader"}, headers=write)
    pipeline = r.json()["pipeline"]["id"]
    r = await client.post(f"{ELT}/runs", headers=write,
                          json={"pipelineId": pipeline, "status": "running"})
    run_id = r.json()["run"]["id"]
    cid = await create_connection(client, tenant)
    r = await client.post("/pipeline", headers=write,
                          json={"name": "watched", "pipeline_type_name": "extraction"})
    watched = r.json()["id"]
    started = datetime.now(UTC) - timedelta(minutes=1)

    async def calls() -> list[Outcome]:
        load = Load(client)
        await load.call("elt", "PATCH", f"{ELT}/runs/{run_id}", tenant.tokens["write"],
                        {"appendLog": {"message": "x"}})
        await load.call("report", "POST", f"{tenant.prefix}/{cid}/metrics/",
                        tenant.tokens["report"], {"started_at": iso(started)})
        await load.call("watcher", "POST", "/start_pipeline_execution", tenant.tokens["write"],
                        {"pipeline_id": watched, "start_date": iso(started)})
        await load.call("graphql", "POST", "/graphql", tenant.tokens["admin"], {
            "query": 'mutation { createConnection(input: {name: "g", warehouseType: "x"}) '
                     "{ __typename } }"})
        return load.outcomes

    conn = connections.get("default")
    holder = sqlite3.connect(sqlite_path(database_url), isolation_level=None, timeout=5)
    try:
        await conn.execute_script("PRAGMA busy_timeout = 300")
        holder.execute("BEGIN EXCLUSIVE")
        try:
            locked = await calls()
        finally:
            holder.execute("ROLLBACK")
        healed = await calls()
    finally:
        holder.close()
        await conn.execute_script("PRAGMA busy_timeout = 10000")

    assert [o.status for o in locked] == [503] * 4, [(o.kind, o.status, o.body) for o in locked]
    assert not [p for o in locked if (p := shape_problem(o))]
    assert all(o.ok for o in healed), [(o.kind, o.status, o.body) for o in healed]


@SQLITE
async def test_a_transaction_cancelled_while_waiting_for_the_lock_leaves_nothing_open(
        app, database_url):
    """Cancelled while its BEGIN IMMEDIATE waits for another process's lock: once the lock
    is free the transaction it opened is rolled back and the connection is usable again, its
    later writes committed (not held in a transaction nobody will end)."""
    path = sqlite_path(database_url)
    holder = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        try:
            async def never() -> None:
                async with in_transaction() as tx:
                    await Organisation.create(name="never", using_db=tx)

            task = asyncio.ensure_future(never())
            await asyncio.sleep(0.5)  # waiting for the write lock (busy timeout: 10 s)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            holder.execute("ROLLBACK")
        async with asyncio.timeout(10):  # a lock left held would hang here
            await Organisation.create(name="after")
        names = {row[0] for row in holder.execute("SELECT name FROM organisation")}
    finally:
        holder.close()
    assert "after" in names and "never" not in names
