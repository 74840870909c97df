"""Watcher's own Python client, `etl-watcher-sdk` (its `watcher` package), driven through its
public API against a real `runwatch serve` on a free loopback port, with `auth=` sending a
`report,read` token as the bearer: pipeline sync with watermarks and lineage, starts and ends,
the tracking decorator with children, checks, the orchestrated ETL helper, and its errors.

The SDK's own quirks fail against the original too; they are not emulated (README, Watcher
section), and the tests below assert their documented outcome:
- `update_pipeline_next_watermark` sends `pipeline_id` where `PATCH /pipeline` wants `id`
  (or `name`): 422 "Value error, Either 'id' or 'name' must be provided".
- `start_pipeline_execution(parent_execution_id=...)` sends `parent_execution_id`, a key
  the contract does not have (it is `parent_id`): ignored, the execution has no parent.
- `end_pipeline_execution` without `end_date` fails in the SDK itself (its input model
  requires it), before any request.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pendulum
import pytest
from pydantic import ValidationError
from watcher import (
    Address,
    AddressLineage,
    ETLResult,
    ExecutionResult,
    OrchestratedETL,
    Pipeline,
    PipelineConfig,
    SyncedPipelineConfig,
    Watcher,
    WatcherAPIError,
    WatcherContext,
)

from tests import conftest
from tests.test_browser import RUNWATCH, cli, free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    base: str
    token: str
    clients: list[Watcher] = field(default_factory=list)

    def get(self, path: str) -> Any:
        r = httpx.get(self.base + path, headers={"Authorization": f"Bearer {self.token}"},
                      timeout=30)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r.json()

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        r = httpx.patch(self.base + path, json=body,
                        headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        assert r.status_code == 200, f"PATCH {path}: {r.status_code} {r.text}"
        return r.json()

    def watcher(self, auth: str | None = None) -> Watcher:
        return self.track(Watcher(self.base, auth=auth or self.token))

    def track(self, client: Watcher) -> Watcher:
        """A client to close after the test (the SDK leaves its connection pool open)."""
        self.clients.append(client)
        return client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`runwatch serve` on a free loopback port and a database of its own."""
    tmp = tmp_path_factory.mktemp("sdk-server")
    pg_name = None
    if conftest.DIALECT == "postgres":
        pg_name, url = asyncio.run(conftest._create_pg_database())
        url = url.replace("asyncpg://", "postgres://", 1)
    else:
        url = f"sqlite://{tmp / 'sdk.db'}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RUNWATCH_"))}
    # The server runs this checkout's code (not the venv's editable install, which may be
    # another working tree).
    env.update(DATABASE_URL=url, RUNWATCH_PORT=str(port), PYTHONPATH=str(ROOT))
    cli(env, "migrate")
    org = re.search(r"\d+", cli(env, "org", "create", "sdk")).group()
    token = re.search(r"rw_\S+", cli(env, "token", "create", "--org", org, "--scope",
                                     "report,read", "--name", "loader")).group()
    log = tmp / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*RUNWATCH, "serve", "--port", str(port)], env=env, cwd=tmp,
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield Server(base=base, token=token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if pg_name:
            asyncio.run(conftest._drop_pg_database(pg_name))


@pytest.fixture(autouse=True)
def close_clients(server: Server) -> Iterator[None]:
    yield
    while server.clients:
        server.clients.pop().client.close()


def address(name: str) -> Address:
    return Address(name=name, address_type_name="postgres", address_type_group_name="database")


def config(name: str, next_watermark: Any, **fields: Any) -> PipelineConfig:
    return PipelineConfig(
        pipeline=Pipeline(name=name, pipeline_type_name="extraction", **fields),
        address_lineage=AddressLineage(source_addresses=[address("app.public.orders")],
                                       target_addresses=[address("dwh.sales.orders")]),
        default_watermark="1970-01-01", next_watermark=next_watermark)


# ------------------------------------------------------------------------------ pipeline sync


def test_sync_creates_the_pipeline_its_lineage_and_hands_the_watermark_on(server):
    w = server.watcher()
    synced = w.sync_pipeline_config(config("Orders_Load", "2024-01-02", freshness_number=1,
                                           freshness_datepart="day"))
    assert isinstance(synced, SyncedPipelineConfig)
    assert synced.pipeline.active is True
    # A new pipeline has no watermark: the SDK falls back to the default one.
    assert (synced.watermark, synced.next_watermark) == ("1970-01-01", "2024-01-02")
    pid = synced.pipeline.id
    stored = server.get(f"/pipeline/{pid}")
    assert (stored["name"], stored["next_watermark"], stored["freshness_datepart"]) == (
        "orders_load", "2024-01-02", "day")
    assert stored["load_lineage"] is True
    names = {a["name"] for a in server.get("/address")}
    assert {"app.public.orders", "dwh.sales.orders"} <= names

    @w.track_pipeline_execution(pipeline_id=pid, active=True, watermark=synced.watermark,
                                next_watermark=synced.next_watermark)
    def load(watcher_context: WatcherContext) -> ETLResult:
        assert watcher_context.pipeline_id == pid
        assert watcher_context.watermark == "1970-01-01"
        return ETLResult(completed_successfully=True, inserts=10, total_rows=10)

    result = load()
    assert isinstance(result, ExecutionResult)
    run = server.get(f"/pipeline_execution/{result.execution_id}")
    assert (run["completed_successfully"], run["inserts"], run["total_rows"]) == (True, 10, 10)
    assert (run["watermark"], run["next_watermark"]) == ("1970-01-01", "2024-01-02")
    stored = server.get(f"/pipeline/{pid}")
    assert (stored["watermark"], stored["load_lineage"]) == ("2024-01-02", False)
    assert stored["last_target_insert"] == run["end_date"]

    # The next sync answers the watermark handed on, and skips the lineage (load_lineage off).
    again = w.sync_pipeline_config(config("Orders_Load", "2024-01-03"))
    assert (again.pipeline.id, again.watermark) == (pid, "2024-01-02")
    assert server.get(f"/pipeline/{pid}")["next_watermark"] == "2024-01-03"


def test_a_sync_without_next_watermark_keeps_the_chain(server):
    """`sync_pipeline_config` always sends `next_watermark`, null when the config has none:
    that stores nothing (the original ignores null), and the answer's watermark is null, so
    the SDK uses its default one, as against the original."""
    w = server.watcher()
    pid = w.sync_pipeline_config(config("chain", "a")).pipeline.id
    synced = w.sync_pipeline_config(config("chain", None))
    assert (synced.pipeline.id, synced.watermark) == (pid, "1970-01-01")
    assert server.get(f"/pipeline/{pid}")["next_watermark"] == "a"

    @w.track_pipeline_execution(pipeline_id=pid, active=True)
    def load() -> ETLResult:
        return ETLResult(completed_successfully=True, inserts=1)

    load()
    w.sync_pipeline_config(config("chain", None))
    stored = server.get(f"/pipeline/{pid}")
    assert (stored["watermark"], stored["next_watermark"]) == ("a", "a")
    assert w.sync_pipeline_config(config("chain", "b")).watermark == "a"


def test_sync_of_an_inactive_pipeline_warns_and_skips(server):
    w = server.watcher()
    pid = w.sync_pipeline_config(config("paused", "5")).pipeline.id
    server.patch("/pipeline", {"id": pid, "active": False})
    with pytest.warns(UserWarning, match="is not active"):
        synced = w.sync_pipeline_config(config("paused", "6"))
    assert (synced.pipeline.active, synced.watermark) == (False, None)

    @w.track_pipeline_execution(pipeline_id=pid, active=synced.pipeline.active)
    def never() -> ETLResult:
        raise AssertionError("an inactive pipeline's function is not called")

    with pytest.warns(UserWarning, match="not active - aborting"):
        assert never() is None


# ------------------------------------------------------------------ starts, ends, children


def test_explicit_starts_and_ends(server):
    w = server.watcher()
    pid = w.sync_pipeline_config(config("explicit", "b")).pipeline.id
    started = pendulum.datetime(2024, 5, 1, 9, 30, tz="UTC")
    eid = w.start_pipeline_execution(pipeline_id=pid, start_date=started, watermark="a",
                                     next_watermark="b")
    w.end_pipeline_execution(eid, completed_successfully=False,
                             end_date=started.add(minutes=2), total_rows=0,
                             execution_metadata={"Error": "Timeout"})
    run = server.get(f"/pipeline_execution/{eid}")
    assert run["start_date"] == "2024-05-01T09:30:00Z"
    assert (run["completed_successfully"], run["duration_seconds"]) == (False, 120)
    assert run["execution_metadata"] == {"Error": "Timeout"}
    assert run["hour_recorded"] == 9
    # A failed end does not hand the watermark on.
    assert server.get(f"/pipeline/{pid}")["watermark"] is None
    # The same end again: runwatch's no-op (README: the original applies it again).
    w.end_pipeline_execution(eid, completed_successfully=False,
                             end_date=started.add(minutes=2), total_rows=0)
    with pytest.raises(WatcherAPIError) as conflict:
        w.end_pipeline_execution(eid, completed_successfully=True,
                                 end_date=started.add(minutes=3))
    assert conflict.value.status_code == 409


def test_the_decorator_with_children_and_failures(server):
    w = server.watcher()
    parent_pid = w.sync_pipeline_config(config("parent job", "p")).pipeline.id
    child_pid = w.sync_pipeline_config(config("child job", "c")).pipeline.id

    @w.track_pipeline_execution(pipeline_id=parent_pid, active=True)
    def parent(watcher_context: WatcherContext) -> ETLResult:
        done = w.track_child_pipeline_execution(
            child_pid, True, watcher_context.execution_id,
            lambda watcher_context: ETLResult(completed_successfully=True, updates=3,
                                              total_rows=3))
        assert isinstance(done, ExecutionResult)
        with pytest.raises(RuntimeError):
            w.track_child_pipeline_execution(child_pid, True, watcher_context.execution_id,
                                             _explode)
        return ETLResult(completed_successfully=True, total_rows=3)

    result = parent()
    tree = server.get(f"/pipeline_execution/{result.execution_id}")
    assert tree["completed_successfully"] is True
    children = tree["child_executions"]
    assert [(c["pipeline_id"], c["completed_successfully"], c["updates"]) for c in children] == [
        (child_pid, True, 3), (child_pid, False, None)]

    # An exception in the decorated function ends the execution as failed and goes on up.
    @w.track_pipeline_execution(pipeline_id=parent_pid, active=True,
                                parent_execution_id=result.execution_id)
    def broken() -> ETLResult:
        raise RuntimeError("source unreachable")

    with pytest.raises(RuntimeError, match="source unreachable"):
        broken()
    tree = server.get(f"/pipeline_execution/{result.execution_id}")
    assert [c["completed_successfully"] for c in tree["child_executions"]] == [True, False,
                                                                                False]

    # A function that does not return an ETLResult is refused by the SDK; the run fails.
    @w.track_pipeline_execution(pipeline_id=child_pid, active=True)
    def wrong() -> Any:
        return {"rows": 1}

    with pytest.raises(ValueError, match="must return ETLResult"):
        wrong()


def test_the_decorators_with_a_string_pipeline_id(server):
    """The decorators put the caller's `pipeline_id` and `parent_execution_id` into the body
    as given, without a model: an id read from an environment variable or an Airflow
    Variable is a string. The original reads it in pydantic's lax mode, and so does
    runwatch."""
    w = server.watcher()
    pid = str(w.sync_pipeline_config(config("from env", "e1")).pipeline.id)

    @w.track_pipeline_execution(pipeline_id=pid, active=True)
    def parent(watcher_context: WatcherContext) -> ETLResult:
        assert watcher_context.pipeline_id == int(pid)
        child = w.track_child_pipeline_execution(
            pid, True, str(watcher_context.execution_id),
            lambda: ETLResult(completed_successfully=True, inserts=2))
        assert isinstance(child, ExecutionResult)
        return ETLResult(completed_successfully=True, total_rows=2)

    result = parent()
    tree = server.get(f"/pipeline_execution/{result.execution_id}")
    assert (tree["pipeline_id"], tree["completed_successfully"]) == (int(pid), True)
    assert [(c["pipeline_id"], c["inserts"]) for c in tree["child_executions"]] == [
        (int(pid), 2)]
    assert server.get(f"/pipeline/{pid}")["watermark"] == "e1"
    w.trigger_timeliness_check(lookback_minutes="30")  # type: ignore[arg-type]


def _explode() -> ETLResult:
    raise RuntimeError("child failed")


# --------------------------------------------------------------------------- the SDK's quirks


def test_update_pipeline_next_watermark_sends_pipeline_id_and_gets_422(server):
    """Its body `{"pipeline_id", "next_watermark"}` names neither `id` nor `name`: the
    original answers 422 and so does runwatch, with the original's message."""
    w = server.watcher()
    pid = w.sync_pipeline_config(config("quirky", "1")).pipeline.id
    with pytest.raises(WatcherAPIError) as error:
        w.update_pipeline_next_watermark(pid, "2")
    assert error.value.status_code == 422
    assert "Value error, Either 'id' or 'name' must be provided" in error.value.response_text
    assert server.get(f"/pipeline/{pid}")["next_watermark"] == "1"


def test_start_with_parent_execution_id_is_a_root(server):
    w = server.watcher()
    pid = w.sync_pipeline_config(config("orphans", "1")).pipeline.id
    parent = w.start_pipeline_execution(pipeline_id=pid)
    child = w.start_pipeline_execution(pipeline_id=pid, parent_execution_id=parent)
    assert server.get(f"/pipeline_execution/{child}")["parent_id"] is None
    assert server.get(f"/pipeline_execution/{parent}")["child_executions"] == []


def test_end_without_end_date_fails_in_the_sdk(server):
    w = server.watcher()
    pid = w.sync_pipeline_config(config("no end date", "1")).pipeline.id
    eid = w.start_pipeline_execution(pipeline_id=pid)
    with pytest.raises(ValidationError):
        w.end_pipeline_execution(eid, completed_successfully=True)
    assert server.get(f"/pipeline_execution/{eid}")["end_date"] is None


# ----------------------------------------------------------------------------------- checks


def test_checks_and_queue_monitoring(server):
    w = server.watcher()
    assert w.trigger_timeliness_check(lookback_minutes=60) is None
    assert w.trigger_freshness_check() is None
    assert w.trigger_celery_queue_check() is None
    with pytest.raises(WatcherAPIError) as error:
        w.trigger_timeliness_check(lookback_minutes=1)
    assert error.value.status_code == 422


def test_errors_are_watcher_api_errors(server):
    with pytest.raises(WatcherAPIError) as error:
        server.watcher().start_pipeline_execution(pipeline_id=424242)
    assert (error.value.status_code, error.value.response_text) == (
        404, '{"detail":"pipeline not found"}')
    with pytest.raises(WatcherAPIError) as error:
        server.watcher(auth="rw_not_a_token").trigger_freshness_check()
    assert error.value.status_code == 401


# ----------------------------------------------------------------------- orchestrated ETL


def test_orchestrated_etl(server):
    etl = OrchestratedETL(server.base, config("orchestrated", "2024-02-01"), auth=server.token)
    server.track(etl.watcher)
    seen: list[Any] = []

    def job(watcher_context: WatcherContext, **kwargs: Any) -> ETLResult:
        seen.append((watcher_context.watermark, watcher_context.next_watermark, kwargs))
        return ETLResult(completed_successfully=True, inserts=4, total_rows=4,
                         execution_metadata={"source": "api"})

    airflow = {"run_id": "manual__1", "dag_id": "orders", "task_id": "load",
               "execution_date": "2024-02-01"}
    parent = etl.start_parent_execution()
    result = etl.execute_etl(job, orchestration_context=airflow, parent_execution_id=parent)
    # Documented as an ETLResult; it is the decorator's ExecutionResult.
    assert isinstance(result, ExecutionResult) and result.result.completed_successfully
    assert seen[0][:2] == ("1970-01-01", "2024-02-01")
    assert seen[0][2]["_orchestration_metadata"]["orchestrator"] == "airflow"
    etl.end_parent_execution(parent, ETLResult(completed_successfully=True, total_rows=4))
    tree = server.get(f"/pipeline_execution/{parent}")
    assert tree["completed_successfully"] is True and tree["total_rows"] == 4
    [child] = tree["child_executions"]
    assert child["execution_metadata"] == {
        "source": "api", "orchestrator": "airflow", "run_id": "manual__1",
        "execution_date": "2024-02-01", "partition_key": None, "dag_id": "orders",
        "task_id": "load"}
    pid = tree["pipeline_id"]
    assert server.get(f"/pipeline/{pid}")["watermark"] == "2024-02-01"

    # A context the SDK does not know: a warning, a generic context.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        etl.execute_etl(job, orchestration_context=object())
    assert any("Unknown orchestration context" in str(w.message) for w in caught)


def test_the_clock_of_the_runs_is_the_loaders(server):
    """Starts and ends stamped by the SDK (pendulum, UTC) are stored as sent."""
    w = server.watcher()
    pid = w.sync_pipeline_config(config("clock", "1")).pipeline.id
    before = datetime.now(UTC) - timedelta(seconds=1)

    @w.track_pipeline_execution(pipeline_id=pid, active=True)
    def quick() -> ETLResult:
        return ETLResult(completed_successfully=True)

    run = server.get(f"/pipeline_execution/{quick().execution_id}")
    start = datetime.fromisoformat(run["start_date"].replace("Z", "+00:00"))
    assert before < start < datetime.fromisoformat(run["end_date"].replace("Z", "+00:00"))
