"""The asyncio client: the same `core` requests carried by an `httpx.AsyncClient`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from runwatch.client import core
from runwatch.client.errors import Cancelled, RunwatchError


class AsyncClient:
    """The async twin of `Client`: the same arguments, every call awaited."""

    def __init__(self, base_url: str, token: str, *, organisation: int | str | None = None,
                 policy: core.RetryPolicy | None = None, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.organisation = organisation
        self.policy = policy or core.RetryPolicy()
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout,
                                       headers={"Authorization": f"Bearer {token}"},
                                       transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _drive(self, gen: Generator[Any, Any, Any]) -> Any:
        step = next(gen)
        while True:
            if isinstance(step, core.Sleep):
                await asyncio.sleep(step.seconds)
                answer: Any = None
            else:
                try:
                    r = await self._http.request(step.method, step.path, json=step.json,
                                                 params=step.params)
                    answer = core.Answer(r.status_code, dict(r.headers), r.content)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    answer = core.RefusedConnection(repr(exc))
                except httpx.TransportError as exc:
                    answer = exc
            try:
                step = gen.send(answer)
            except StopIteration as stop:
                return stop.value

    async def send(self, request: core.Request) -> Any:
        return await self._drive(core.exchange(request, self.policy))

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        try:
            body = await self.send(core.graphql_request(query, variables))
        except RunwatchError as exc:
            raise core.graphql_http_error(exc) from None
        return core.graphql_result(body)

    def _org(self) -> int | str:
        if self.organisation is None:
            raise RunwatchError("AsyncClient(organisation=...) is needed for warehouse runs")
        return self.organisation

    async def start_run(self, connection_id: int | str) -> int:
        body = await self.send(core.start_request(self._org(), connection_id))
        return int(body["run_id"])

    async def report(self, connection_id: int | str, report: core.Report,
                     failure: BaseException | None = None) -> None:
        await self.send(core.report_request(self._org(), connection_id, report, failure))

    @asynccontextmanager
    async def run(self, connection_id: int | str,
                  run_id: int | None = None) -> AsyncIterator[core.Report]:
        report = core.Report(run_id=run_id if run_id is not None
                             else await self.start_run(connection_id))
        try:
            yield report
        except BaseException as exc:
            try:
                await self.report(connection_id, report, failure=exc)
            except RunwatchError as lost:  # the block's exception is the one to see
                exc.add_note(f"runwatch: the failure report of run {report.run_id} was "
                             f"not sent: {lost}")
            raise
        await self.report(connection_id, report)

    @asynccontextmanager
    async def elt_run(self, pipeline_id: int | str | None = None, *,
                      run_id: int | str | None = None, gateway: bool = False,
                      max_items: int = 50, max_seconds: float = 2.0,
                      **fields: Any) -> AsyncIterator[AsyncEltRun]:
        job = AsyncEltRun(self, core.new_elt_buffer(pipeline_id, run_id, gateway, max_items,
                                                    max_seconds))
        if run_id is None:
            job.buffer.take(await self.send(core.create_elt_request(pipeline_id or "",
                                                                    **fields)))
            job.buffer.path = f"{core.ELT_RUNS}/{job.buffer.run['id']}"
        else:
            await job._send_all([core.claim_request(job.buffer.path)])
            job.buffer.check()
        try:
            yield job
        except Cancelled:
            job.buffer.drain()
            raise
        except BaseException as exc:
            try:
                await job._send_all(job.buffer.drain(final=core.finish_body(exc)), final=True)
            except RunwatchError as lost:
                exc.add_note(f"runwatch: the failure of run {job.id} was not reported: "
                             f"{lost}")
            raise
        await job._send_all(job.buffer.drain(final=core.finish_body(None)), final=True)


class AsyncEltRun:
    """The async twin of `EltRun`."""

    def __init__(self, client: AsyncClient, buffer: core.EltBuffer) -> None:
        self._client = client
        self.buffer = buffer

    @property
    def id(self) -> str:
        return str(self.buffer.run.get("id"))

    @property
    def cancelled(self) -> bool:
        return self.buffer.cancelled

    async def _send_all(self, requests: list[core.Request], final: bool = False) -> None:
        for request in requests:
            try:
                self.buffer.take(await self._client.send(request))
            except Cancelled:
                self.buffer.cancelled = True
                if final:
                    return
                raise

    async def _maybe_flush(self) -> None:
        self.buffer.check()
        if self.buffer.due():
            await self.flush()

    async def log(self, message: str, level: str = "info") -> None:
        self.buffer.log(message, level)
        await self._maybe_flush()

    async def sample(self, **point: Any) -> None:
        self.buffer.sample(**point)
        await self._maybe_flush()

    async def summary(self, **values: Any) -> None:
        self.buffer.set_summary(**values)
        await self._maybe_flush()

    async def flush(self) -> None:
        await self._send_all(self.buffer.drain())
        self.buffer.check()

    async def check_cancel(self) -> None:
        if self.buffer.waiting:
            await self.flush()
        else:
            self.buffer.take(await self._client.send(core.Request("GET", self.buffer.path)))
        self.buffer.check()
