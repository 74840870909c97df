"""Several processes per host: `runwatch serve --workers N`.

- **How many.** `--workers N`, else `RUNWATCH_SERVE_WORKERS`, else one per core on PostgreSQL
  and one on SQLite. SQLite has one writer at a time, so more than one process on it is
  refused unless forced (`--force-workers`).
- **One process** (N = 1): the API and, unless `RUNWATCH_WORKERS_IN_SERVE=0`, the background
  workers in the same process, as always.
- **Several** (N > 1): uvicorn's supervisor runs N API processes on one listening socket (each
  built by `api_app`, which runs no background work and names its process in a
  `runwatch-process` response header), and this module starts ONE more process for the
  background workers (webhook delivery, tasks, the reaper: `runwatch.services.workers`), so
  that the API processes only serve.
- **Stopping** (SIGTERM or SIGINT to the parent): API processes stop accepting connections and
  finish the requests in flight for up to `--graceful-timeout` seconds
  (`RUNWATCH_GRACEFUL_TIMEOUT_SECONDS`); the background process lets the work in hand finish in
  the same time, then gives back what it claimed and did not finish (tasks and webhook
  deliveries are released, due at once, so that another worker takes them without waiting
  for the claim's hold to run out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from typing import Any

from tortoise import Tortoise

from runwatch.app import create_app
from runwatch.db import tortoise_config
from runwatch.services.workers import run_workers
from runwatch.settings import Settings, SettingsError

log = logging.getLogger("runwatch.supervisor")

PROCESS_HEADER = b"runwatch-process"


def worker_count(settings: Settings, requested: int | None = None, *,
                 force: bool = False) -> int:
    """The number of API processes to run; SettingsError when SQLite would get several."""
    count = requested if requested is not None else settings.serve_workers
    if count < 0:
        raise SettingsError(f"--workers must be at least 1, got {count}")
    if count == 0:
        count = 1 if settings.is_sqlite else (os.cpu_count() or 1)
    if count > 1 and settings.is_sqlite and not force:
        raise SettingsError(
            f"{count} server processes on SQLite: SQLite takes one writer at a time, so "
            "several processes would only wait for each other's locks. Use PostgreSQL "
            "(DATABASE_URL=postgres://...) for several processes, run one (--workers 1), or "
            "force it with --force-workers")
    return count


class ProcessHeader:
    """ASGI middleware: every HTTP response names the process that answered it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.value = str(os.getpid()).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (PROCESS_HEADER, self.value)]}
            await send(message)

        await self.app(scope, receive, send_named)


def api_app() -> Any:
    """uvicorn's factory in each API process: the app without background work (the
    background process runs it), settings from the environment the parent set."""
    return ProcessHeader(create_app(Settings.from_env(), run_background=False))


async def _background(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await Tortoise.init(config=tortoise_config(settings.database_url))
    try:
        await run_workers(settings, stop)
    finally:
        await Tortoise.close_connections()


def _background_main() -> None:
    """The background process: every worker loop until SIGTERM, then what it holds is
    finished or given back (see `runwatch.services.workers`)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     [background] %(message)s")
    settings = Settings.from_env()
    print(f"runwatch background workers in process {os.getpid()}", flush=True)
    asyncio.run(_background(settings))


def serve(settings: Settings, *, host: str, port: int, workers: int, **uvicorn_options: Any
          ) -> None:
    """Serve the API in `workers` processes (see the module's description); returns once
    stopped."""
    import uvicorn

    graceful = settings.graceful_timeout_seconds
    options = {"host": host, "port": port, "timeout_graceful_shutdown": graceful,
               **uvicorn_options}
    if workers <= 1:
        uvicorn.run(create_app(settings), **options)
        return
    # The children (spawned, not forked) read their settings from the environment.
    os.environ["DATABASE_URL"] = settings.database_url
    os.environ["RUNWATCH_GRACEFUL_TIMEOUT_SECONDS"] = str(graceful)
    keeper = _Keeper() if settings.workers_in_serve else None
    try:
        uvicorn.run("runwatch.supervisor:api_app", factory=True, workers=workers, **options)
    finally:
        if keeper is not None:
            keeper.stop(graceful + 10)


class _Keeper:
    """Runs the background process and starts another when it dies, until stopped."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.process = self._start()
        self.thread = threading.Thread(target=self._watch, name="runwatch-keeper", daemon=True)
        self.thread.start()

    @staticmethod
    def _start() -> multiprocessing.process.BaseProcess:
        process = multiprocessing.get_context("spawn").Process(
            target=_background_main, name="runwatch-background")
        process.start()
        return process

    def _watch(self) -> None:
        while not self.stopping.wait(1):
            if not self.process.is_alive():
                log.warning("background process %s exited (code %s): starting another",
                            self.process.pid, self.process.exitcode)
                self.process = self._start()

    def stop(self, timeout: float) -> None:
        self.stopping.set()
        self.thread.join(5)
        _stop(self.process, timeout)


def _stop(process: multiprocessing.process.BaseProcess, timeout: float) -> None:
    if process.is_alive() and process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    process.join(timeout)
    if process.is_alive():
        log.warning("background process %s did not stop in %ss: killed (what it held is due "
                    "again when its claims' holds run out)", process.pid, timeout)
        process.kill()
        process.join(5)
