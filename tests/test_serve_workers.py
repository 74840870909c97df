"""Several processes per host: `runwatch serve --workers N` (runwatch.supervisor).

The process tests run a real `runwatch serve --workers 2` on loopback against the test's
PostgreSQL database (SQLite refuses several processes: tested on both). Every wait is bounded;
the server is stopped (then killed) whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from runwatch.models import DeliveryStatus, Task, TaskStatus, WebhookDelivery
from runwatch.resolvers import tasks as tasks_api
from runwatch.resolvers.clock import utcnow
from runwatch.services.tasks import TaskRunner, claim
from runwatch.services.webhooks import Sender, claim_due
from runwatch.settings import Settings
from tests.conftest import DIALECT, Tenant, _free_port
from tests.test_webhooks import finish, new_endpoint, new_pipeline, running_run
from tests.webhook_receiver import Answer, Receiver

ROOT = Path(__file__).resolve().parent.parent
postgres_only = pytest.mark.skipif(DIALECT != "postgres",
                                   reason="several processes need PostgreSQL")


def _env(database_url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": database_url,
            "RUNWATCH_WEBHOOK_ALLOW_PRIVATE": "1", "RUNWATCH_TOKEN_CACHE_SECONDS": "0",
            "RUNWATCH_RATE_LIMIT_PER_MINUTE": "0", **extra}


@contextlib.asynccontextmanager
async def serving(database_url: str, *args: str, **extra: str
                  ) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    port = _free_port()
    log = open(os.environ.get("RUNWATCH_SERVE_TEST_LOG", os.devnull), "ab")  # noqa: SIM115
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runwatch.cli", "serve", "--host", "127.0.0.1",
        "--port", str(port), *args, env=_env(database_url, **extra),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(150):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url + "/health")).status_code == 200:
                        break
                assert proc.returncode is None, "serve exited before it answered"
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("serve did not answer within 30 s")
        yield proc, url
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
        log.close()


async def _stopped(proc: asyncio.subprocess.Process, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(proc.wait(), timeout)
    return code, time.monotonic() - started


def test_sqlite_refuses_several_processes(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "runwatch.cli", "serve", "--workers", "2", "--database-url",
         f"sqlite://{tmp_path}/r.db"], env=_env(f"sqlite://{tmp_path}/r.db"),
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "SQLite" in done.stderr and "--force-workers" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r.db").exists()  # refused before anything was done


def test_worker_count_defaults():
    from runwatch.supervisor import worker_count

    sqlite = Settings(database_url="sqlite://x.db")
    pg = Settings(database_url="asyncpg://u@h:5432/d")
    assert worker_count(sqlite) == 1
    assert worker_count(pg) == (os.cpu_count() or 1)
    assert worker_count(Settings(database_url="asyncpg://u@h/d", serve_workers=3)) == 3
    assert worker_count(pg, 2) == 2
    assert worker_count(sqlite, 2, force=True) == 2


@postgres_only
async def test_two_processes_serve_and_stop_gracefully(database_url, tenant: Tenant):
    async with serving(database_url, "--workers", "2", "--graceful-timeout", "8") as (proc, url):
        pids: set[str] = set()
        # A new connection per request: kept-alive ones, all made while one process was the
        # first to accept, would keep asking that process alone.
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=5, limits=fresh) as client:
            deadline = time.monotonic() + 20
            while len(pids) < 2 and time.monotonic() < deadline:
                answers = await asyncio.gather(*(client.get(url + "/health") for _ in range(16)))
                pids |= {a.headers["runwatch-process"] for a in answers}
        assert len(pids) == 2, pids
        assert str(proc.pid) not in pids  # the parent only supervises

        # A request in flight when SIGTERM arrives: its body still arriving.
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"query": "{ connections { nodes { id } } }"}).encode()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /graphql HTTP/1.1\r\nhost: runwatch\r\ncontent-type: "
                     b"application/json\r\nauthorization: Bearer "
                     + tenant.tokens["read"].encode()
                     + f"\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body[:10])
        await writer.drain()
        await asyncio.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.5)
        writer.write(body[10:])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert b'"connections"' in answer
        code = await asyncio.wait_for(proc.wait(), 20)
        assert code == 0
        assert time.monotonic() - started < 8 + 10
        with pytest.raises(httpx.ConnectError):  # and nothing listens any more
            httpx.get(url + "/health", timeout=2)


@postgres_only
async def test_a_stopping_background_process_gives_its_deliveries_back(database_url, caller):
    async with Receiver.running() as receiver:
        receiver.default = Answer(200, delay=30)  # holds the send while the worker stops
        pipeline = await new_pipeline(caller)
        await new_endpoint(caller, receiver.url)
        await finish(caller, await running_run(caller, pipeline))
        [delivery] = await WebhookDelivery.all()
        async with serving(database_url, "--workers", "2", "--graceful-timeout", "1",
                           RUNWATCH_WEBHOOK_TIMEOUT_SECONDS="60") as (proc, _url):
            await receiver.wait_for(1, timeout=20)  # the background process is sending it
            await delivery.refresh_from_db()
            assert delivery.claim is not None
            assert delivery.next_attempt_at > utcnow() + timedelta(seconds=30)  # held
            code, took = await _stopped(proc, 20)
            assert code == 0 and took < 15, took
        await delivery.refresh_from_db()
        assert delivery.claim is None and delivery.attempts == 0
        assert delivery.status == DeliveryStatus.PENDING
        assert delivery.next_attempt_at <= utcnow()  # due at once, not after its hold
        receiver.default = 200
        sender = Sender(timeout=5, allow_private=True, concurrency=4)
        try:
            assert await sender.deliver_due() == 1  # another worker takes it at once
        finally:
            await sender.aclose()
        await delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1


class SlowRunner(TaskRunner):
    async def handle(self, task):  # type: ignore[no-untyped-def]
        await asyncio.sleep(60)


async def test_a_stopping_task_worker_gives_its_tasks_back(settings, tenant: Tenant):
    from dataclasses import replace

    first = await tasks_api.enqueue(kind=tasks_api.FRESHNESS, organisation_id=tenant.org_id)
    second = await tasks_api.enqueue(kind=tasks_api.FRESHNESS, organisation_id=tenant.org_id)
    runner = SlowRunner(replace(settings, graceful_timeout_seconds=0.5,
                                check_interval_seconds=0, queue_monitor_interval_seconds=0))
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    for _ in range(100):  # until the runner holds both (and works on the first)
        if await Task.filter(claim__isnull=False).count() == 2:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the runner claimed nothing")
    stop.set()
    await asyncio.wait_for(running, 5)
    for task in (first, second):
        await task.refresh_from_db()
        assert task.claim is None and task.attempts == 0, task.id
        assert task.status == TaskStatus.PENDING and task.due_at <= utcnow()
    taken = await claim(5, utcnow())  # another worker takes both at once
    assert sorted(t.id for t in taken) == [first.id, second.id]


async def test_claimed_but_unstarted_tasks_are_given_back_on_stop(settings, tenant: Tenant):
    await tasks_api.enqueue(kind=tasks_api.FRESHNESS, organisation_id=tenant.org_id)
    stop = asyncio.Event()
    stop.set()
    assert await TaskRunner(settings).run_due(stop=stop) == 1
    [task] = await Task.all()
    assert task.claim is None and task.attempts == 0 and task.status == TaskStatus.PENDING
    assert await claim_due(limit=1, hold=timedelta(seconds=5)) == []  # no delivery involved
