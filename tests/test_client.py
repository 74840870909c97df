"""`runwatch.client` against a real server (uvicorn on loopback, `live_url`), on the test
database: warehouse run reports, retries (503 after the report was applied, 429 with
`Retry-After`, connection refused), the failure path, ELT runs (batched logs and samples,
cancellation), GraphQL errors, the async twins, and the README's example as written.

The server runs in the tests' event loop: the blocking client is called from a thread."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from runwatch.client import (
    AsyncClient,
    AuthError,
    Cancelled,
    Client,
    Conflict,
    GraphQLError,
    NotFound,
    Report,
    RetriesExhausted,
    RetryPolicy,
    ValidationError,
)
from runwatch.client.core import RefusedConnection
from tests.conftest import Tenant, _free_port
from tests.elt_helpers import create_pipeline, create_run, get_run, make_gateway, patch_run

RW = "read,write,report"
FAST = RetryPolicy(attempts=4, total_seconds=10, base_delay=0.01, max_delay=2)
README = Path(__file__).resolve().parent.parent / "README.md"


def http_base(live_url: str) -> str:
    return live_url.replace("ws://", "http://").removesuffix("/graphql")


# ---- a loopback proxy that misbehaves on cue -------------------------------------------------

@dataclass
class Proxy:
    """Forwards every request to the server, except where `rule(method, path, hit)` says
    `("fail", status, headers)` (answer without forwarding) or `("lose", status, headers)`
    (forward, then answer that instead of the server's answer). Records each hit."""

    upstream: str
    rule: Callable[[str, str, int], tuple[str, int, dict[str, str]] | None] = (
        lambda method, path, hit: None)
    hits: list[tuple[str, str, float]] = field(default_factory=list)
    url: str = ""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        self.hits.append((method, path, time.monotonic()))
        verdict = self.rule(method, path, sum(1 for m, p, _ in self.hits
                                              if (m, p) == (method, path)))
        status, headers, content = 0, {}, b""
        if verdict is None or verdict[0] == "lose":
            async with httpx.AsyncClient(base_url=self.upstream) as http:
                r = await http.request(method, path, content=body, headers=[
                    (k.decode(), v.decode()) for k, v in scope["headers"]
                    if k.lower() not in (b"host", b"content-length")])
            status, content = r.status_code, r.content
            headers = {"content-type": r.headers.get("content-type", "application/json")}
        if verdict is not None:
            status, headers, content = verdict[1], verdict[2], b'{"detail": "proxy says no"}'
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": content})


@pytest.fixture
async def proxy(live_url) -> AsyncIterator[Proxy]:
    p = Proxy(upstream=http_base(live_url))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(p, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    p.url = f"http://127.0.0.1:{port}"
    try:
        yield p
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def client_of(url: str, tenant: Tenant, policy: RetryPolicy = FAST) -> Client:
    return Client(url, tenant.tokens[RW], organisation=tenant.org_id, policy=policy)


def using(client: Client, call: Callable[[Client], Any]) -> Callable[[], Any]:
    """A thread's job: one call with the client, closed afterwards."""
    def job() -> Any:
        with client:
            return call(client)
    return job


async def stored_runs(client: httpx.AsyncClient, tenant: Tenant, cid: int) -> list[dict]:
    data = await graphql(client, tenant, "query($id: ID!) { connection(id: $id) { runs { "
                         "nodes { id status eventsDelivered error } } } }", {"id": str(cid)})
    return data["connection"]["runs"]["nodes"]


async def graphql(client, tenant, query, variables=None) -> Any:
    r = await client.post("/graphql", json={"query": query, "variables": variables or {}},
                          headers=tenant.headers("read"))
    assert r.status_code == 200 and "errors" not in r.json(), r.text
    return r.json()["data"]


# ---- warehouse-connection runs ---------------------------------------------------------------

async def test_run_reports_success_with_the_metrics_set(live_url, client, tenant, cid):
    def job():
        with client_of(http_base(live_url), tenant) as rw, rw.run(cid) as run:
            run.events_delivered, run.batches_dlq = 1200, 1
            run.evaluations, run.custom_events = 1000, 150
        return run.run_id

    run_id = await asyncio.to_thread(job)
    (stored,) = await stored_runs(client, tenant, cid)
    assert stored["id"] == str(run_id) and stored["eventsDelivered"] == 1200
    assert stored["status"] == "FAILED"  # DLQ batches make a failed run (the status rule)


async def test_the_block_raising_reports_the_failure_and_reraises(live_url, client, tenant,
                                                                  cid):
    def job():
        with client_of(http_base(live_url), tenant) as rw, rw.run(cid) as run:
            run.events_delivered = 7
            raise RuntimeError("COPY failed: bucket gone")

    with pytest.raises(RuntimeError, match="bucket gone"):
        await asyncio.to_thread(job)
    (stored,) = await stored_runs(client, tenant, cid)
    assert stored["status"] == "FAILED" and stored["eventsDelivered"] == 7
    assert stored["error"] == "RuntimeError: COPY failed: bucket gone"


async def test_a_503_after_the_report_was_applied_is_retried_to_one_outcome(
        proxy, client, tenant, cid):
    """The proxy forwards the first report and answers 503: the client retries, the replay
    is a 204, and one run is stored with the metrics."""
    proxy.rule = lambda method, path, hit: (
        ("lose", 503, {"retry-after": "0"}) if method == "PATCH" and hit == 1 else None)

    def job():
        with client_of(proxy.url, tenant) as rw, rw.run(cid) as run:
            run.events_delivered, run.evaluations, run.custom_events = 500, 400, 100

    await asyncio.to_thread(job)
    assert [m for m, _, _ in proxy.hits] == ["POST", "PATCH", "PATCH"]
    (stored,) = await stored_runs(client, tenant, cid)
    assert (stored["status"], stored["eventsDelivered"]) == ("SUCCEEDED", 500)
    data = await graphql(client, tenant, "query($id: ID!) { connection(id: $id) { telemetry {"
                         " eventsLast24h { evaluations customEvents total } } } }",
                         {"id": str(cid)})
    assert data["connection"]["telemetry"]["eventsLast24h"] == {
        "evaluations": 400, "customEvents": 100, "total": 500}


async def test_429_waits_as_long_as_retry_after_says(proxy, client, tenant, cid):
    proxy.rule = lambda method, path, hit: (
        ("fail", 429, {"retry-after": "1"}) if method == "PATCH" and hit == 1 else None)

    def job():
        with client_of(proxy.url, tenant) as rw, rw.run(cid) as run:
            run.events_delivered = 3

    await asyncio.to_thread(job)
    patches = [t for m, _, t in proxy.hits if m == "PATCH"]
    assert len(patches) == 2 and patches[1] - patches[0] >= 0.95
    (stored,) = await stored_runs(client, tenant, cid)
    assert stored["eventsDelivered"] == 3


async def test_503_every_time_exhausts_the_attempts(proxy, tenant, cid):
    proxy.rule = lambda method, path, hit: (
        ("fail", 503, {"retry-after": "0"}) if method == "PATCH" else None)

    def job():
        with client_of(proxy.url, tenant) as rw, rw.run(cid) as run:
            run.events_delivered = 3

    with pytest.raises(RetriesExhausted) as caught:
        await asyncio.to_thread(job)
    assert caught.value.status == 503
    assert sum(1 for m, _, _ in proxy.hits if m == "PATCH") == FAST.attempts


async def test_connection_refused_is_retried_then_exhausted(tenant):
    nobody = f"http://127.0.0.1:{_free_port()}"
    policy = RetryPolicy(attempts=3, total_seconds=5, base_delay=0.05)
    started = time.monotonic()
    with pytest.raises(RetriesExhausted, match="3 attempt") as caught:
        await asyncio.to_thread(using(client_of(nobody, tenant, policy),
                                      lambda rw: rw.start_run(1)))
    assert isinstance(caught.value.last, RefusedConnection)
    assert time.monotonic() - started < 5


async def test_the_total_time_bounds_the_retries(proxy, tenant, cid):
    proxy.rule = lambda method, path, hit: ("fail", 503, {"retry-after": "5"})
    policy = RetryPolicy(attempts=10, total_seconds=1, max_delay=10)
    started = time.monotonic()
    with pytest.raises(RetriesExhausted, match="1 attempt"):
        await asyncio.to_thread(using(client_of(proxy.url, tenant, policy),
                                      lambda rw: rw.report(cid, Report(run_id=1))))
    assert time.monotonic() - started < 1


async def test_errors_carry_the_servers_body(live_url, tenant, other_tenant, cid):
    base = http_base(live_url)

    def bad_report():
        with client_of(base, tenant) as rw:
            run_id = rw.start_run(cid)
            rw.report(cid, Report(run_id=run_id, events_delivered=-1))

    with pytest.raises(ValidationError) as caught:
        await asyncio.to_thread(bad_report)
    assert caught.value.status == 400 and "events_delivered" in caught.value.body
    with pytest.raises(NotFound):  # another organisation's connection
        await asyncio.to_thread(using(client_of(base, other_tenant),
                                      lambda rw: rw.start_run(cid)))
    with pytest.raises(AuthError):
        await asyncio.to_thread(using(Client(base, "rw_wrong", organisation=tenant.org_id),
                                      lambda rw: rw.start_run(cid)))


# ---- ELT runs --------------------------------------------------------------------------------

async def test_elt_logs_and_samples_are_sent_in_batches(proxy, client, tenant):
    pipeline = await create_pipeline(client, tenant, "orders")

    def job():
        with client_of(proxy.url, tenant) as rw, rw.elt_run(
                pipeline["id"], max_items=3, max_seconds=60) as run:
            run.log("extract started")
            run.log("200 rows read")
            assert [m for m, _, _ in proxy.hits] == ["POST"]  # buffered
            run.sample(rows=200, progress=40)  # the third item: a flush
            run.summary(rowsLoaded=200, currentPhase="load")
            run.log("load done", level="warn")
        return run.id

    run_id = await asyncio.to_thread(job)
    # flush: (log 1 + sample), (log 2); at exit: (log 3 + summary + succeeded)
    assert [m for m, _, _ in proxy.hits] == ["POST", "PATCH", "PATCH", "PATCH"]
    stored = await get_run(client, tenant, run_id)
    assert stored["status"] == "succeeded"
    assert [(e["level"], e["message"]) for e in stored["logEntries"]] == [
        ("info", "extract started"), ("info", "200 rows read"), ("warn", "load done")]
    (sample,) = stored["telemetry"]["samples"]
    assert (sample["rows"], sample["progress"]) == (200, 40)
    assert stored["telemetry"]["summary"]["rowsLoaded"] == 200
    assert stored["telemetry"]["summary"]["currentPhase"] == "load"


async def test_elt_flushes_by_age(live_url, client, tenant):
    pipeline = await create_pipeline(client, tenant, "orders")
    seen: list[int] = []

    def job():
        with client_of(http_base(live_url), tenant) as rw, rw.elt_run(
                pipeline["id"], max_items=100, max_seconds=0.2) as run:
            run.log("one")
            time.sleep(0.3)
            run.log("two")  # the oldest waited past max_seconds: flushed now
            seen.append(run.buffer.waiting)
        return run.id

    run_id = await asyncio.to_thread(job)
    assert seen == [0]
    assert len((await get_run(client, tenant, run_id))["logEntries"]) == 2


async def test_elt_failure_is_reported_with_the_message(live_url, client, tenant):
    pipeline = await create_pipeline(client, tenant, "orders")
    ids: list[str] = []

    def job():
        with client_of(http_base(live_url), tenant) as rw, rw.elt_run(pipeline["id"]) as run:
            ids.append(run.id)
            run.log("about to fail")
            raise ValueError("no such table")

    with pytest.raises(ValueError):
        await asyncio.to_thread(job)
    stored = await get_run(client, tenant, ids[0])
    assert stored["status"] == "failed" and stored["errorSummary"] == "ValueError: no such table"
    assert [e["message"] for e in stored["logEntries"]] == ["about to fail"]


async def test_elt_cancel_raises_cancelled_that_the_job_can_catch(live_url, client, tenant):
    pipeline = await create_pipeline(client, tenant, "orders")
    loop = asyncio.get_running_loop()
    outcome: list[str] = []

    def job():
        with client_of(http_base(live_url), tenant) as rw, rw.elt_run(pipeline["id"]) as run:
            run.log("working")
            run.flush()
            asyncio.run_coroutine_threadsafe(
                patch_run(client, tenant, run.id, {"status": "cancelled"}), loop).result(10)
            try:
                for _ in range(3):
                    run.log("still working")
                    run.check_cancel()
            except Cancelled:
                outcome.append("stopped")
                raise
        return run.id

    with pytest.raises(Cancelled):
        await asyncio.to_thread(job)
    assert outcome == ["stopped"]
    (stored,) = (await client.get("/api/elt/runs", headers=tenant.headers("read"))).json()["runs"]
    assert stored["status"] == "cancelled"


# ---- GraphQL ---------------------------------------------------------------------------------

async def test_graphql_helper_returns_data_and_raises_on_errors(live_url, tenant, cid):
    def ask(query: str, variables: dict | None = None, token: str = tenant.tokens[RW]):
        return using(Client(http_base(live_url), token, policy=FAST),
                     lambda rw: rw.graphql(query, variables))

    data = await asyncio.to_thread(ask("{ connections { nodes { id name } } }"))
    assert data["connections"]["nodes"] == [{"id": str(cid), "name": "warehouse"}]
    with pytest.raises(GraphQLError) as caught:
        await asyncio.to_thread(ask("{ nosuchfield }"))
    assert caught.value.errors and "nosuchfield" in str(caught.value)
    with pytest.raises(GraphQLError):
        await asyncio.to_thread(ask("query($id: ID!) { connection(id: $id) { id } }",
                                    {"id": None}))  # a null for ID!
    with pytest.raises(AuthError):
        await asyncio.to_thread(ask("{ connections { nodes { id } } }", token="rw_nope"))


# ---- async twins -----------------------------------------------------------------------------

async def test_async_run_retries_and_reports_one_outcome(proxy, client, tenant, cid):
    proxy.rule = lambda method, path, hit: (
        ("lose", 503, {}) if method == "PATCH" and hit == 1 else None)
    async with AsyncClient(proxy.url, tenant.tokens[RW], organisation=tenant.org_id,
                           policy=FAST) as rw:
        async with rw.run(cid) as run:
            run.events_delivered = 42
        with pytest.raises(KeyError):
            async with rw.run(cid) as failing:
                failing.events_delivered = 1
                raise KeyError("partition")
        assert (await rw.graphql("{ connections { nodes { name } } }"))["connections"]
    stored = {r["eventsDelivered"]: r for r in await stored_runs(client, tenant, cid)}
    assert set(stored) == {42, 1}
    assert stored[42]["status"] == "SUCCEEDED"
    assert stored[1]["status"] == "FAILED" and stored[1]["error"] == "KeyError: 'partition'"


async def test_async_elt_run_batches_and_cancels(live_url, client, tenant):
    pipeline = await create_pipeline(client, tenant, "orders")
    async with AsyncClient(http_base(live_url), tenant.tokens[RW], policy=FAST) as rw:
        async with rw.elt_run(pipeline["id"], max_items=2) as run:
            await run.log("a")
            await run.sample(rows=1)
            assert run.buffer.waiting == 0
            await run.summary(rowsLoaded=1)
        done = await get_run(client, tenant, run.id)
        assert done["status"] == "succeeded" and done["telemetry"]["summary"]["rowsLoaded"] == 1

        with pytest.raises(Cancelled):
            async with rw.elt_run(pipeline["id"]) as run:
                await patch_run(client, tenant, run.id, {"status": "cancelled"})
                await run.check_cancel()
        assert run.cancelled
    with pytest.raises(RetriesExhausted):
        async with AsyncClient(f"http://127.0.0.1:{_free_port()}", "t",
                               policy=RetryPolicy(attempts=2, base_delay=0.01)) as nobody:
            await nobody.graphql("{ a }")


# ---- the README's example --------------------------------------------------------------------

def readme_example() -> str:
    section = README.read_text().split("\n## Python client\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return block


def test_the_readme_example_is_ten_lines():
    assert len(readme_example().strip().splitlines()) == 10


async def test_the_readme_example_works_as_written(live_url, client, tenant, cid):
    assert (tenant.org_id, cid) == (1, 1)  # the ids the example names
    env = {**os.environ, "RW": http_base(live_url), "TOKEN": tenant.tokens[RW],
           "PYTHONPATH": str(README.parent)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", readme_example(), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    (stored,) = await stored_runs(client, tenant, cid)
    assert (stored["status"], stored["eventsDelivered"]) == ("SUCCEEDED", 1200)
    assert "1200" in out.decode()


async def test_a_gateway_starts_a_pending_run_and_finishes_it(live_url, client, tenant):
    pipeline = await create_pipeline(client, tenant, "orders")
    pending = await create_run(client, tenant, pipeline["id"])
    agent = await make_gateway(tenant, "gw-1")
    gw = AsyncClient(http_base(live_url), agent.token, policy=FAST)
    async with gw, gw.elt_run(run_id=pending["id"], gateway=True) as run:
        assert run.buffer.run["status"] == "running"
        await run.log("claimed")
    stored = await get_run(client, tenant, pending["id"])
    assert stored["status"] == "succeeded" and stored["gatewayId"] == str(agent.id)
    assert [e["message"] for e in stored["logEntries"]] == ["claimed"]


async def test_a_replica_of_the_gateway_does_not_start_a_claimed_run(live_url, client,
                                                                     tenant):
    """The claim is sent once and a run no longer pending is a Conflict for every replica:
    the client never relies on a repeated claim being a no-op."""
    pipeline = await create_pipeline(client, tenant, "orders")
    pending = await create_run(client, tenant, pipeline["id"])
    agent = await make_gateway(tenant, "gw-1")
    first = AsyncClient(http_base(live_url), agent.token, policy=FAST)
    replica = AsyncClient(http_base(live_url), agent.token, policy=FAST)
    entered = []
    async with first, replica, first.elt_run(run_id=pending["id"], gateway=True) as run:
        await run.log("mine")
        with pytest.raises(Conflict, match="Already claimed"):
            async with replica.elt_run(run_id=pending["id"], gateway=True):
                entered.append(True)
    assert entered == []
    stored = await get_run(client, tenant, pending["id"])
    assert stored["status"] == "succeeded"
    assert [e["message"] for e in stored["logEntries"]] == ["mine"]


# ---- the retry rule, without a server (the core is sans-IO) ---------------------------------

def test_an_ambiguous_failure_retries_only_what_is_idempotent():
    from runwatch.client import RunwatchError
    from runwatch.client.core import Request, Sleep, exchange

    timeout = httpx.ReadTimeout("lost")
    safe = exchange(Request("PATCH", "/x"), FAST)
    next(safe)
    assert isinstance(safe.send(timeout), Sleep)
    unsafe = exchange(Request("POST", "/x", idempotent=False), FAST)
    next(unsafe)
    with pytest.raises(RunwatchError, match="may have been applied"):
        unsafe.send(timeout)
    refused = exchange(Request("POST", "/x", idempotent=False), FAST)
    next(refused)
    assert isinstance(refused.send(RefusedConnection("nothing sent")), Sleep)


async def test_a_lost_failure_report_leaves_the_blocks_exception(tenant):
    nobody = f"http://127.0.0.1:{_free_port()}"
    policy = RetryPolicy(attempts=2, base_delay=0.01)

    def job():
        with client_of(nobody, tenant, policy) as rw, rw.run(1, run_id=5):
            raise RuntimeError("the real problem")

    with pytest.raises(RuntimeError, match="the real problem") as caught:
        await asyncio.to_thread(job)
    assert "was not sent" in caught.value.__notes__[0]


def test_importing_the_client_loads_none_of_the_server():
    import subprocess

    probe = ("import sys, runwatch.client; print(sorted({m.split('.')[0] for m in sys.modules}"
             " & {'tortoise', 'strawberry', 'starlette', 'uvicorn', 'asyncpg', 'aiosqlite'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(README.parent)})
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out.stderr
