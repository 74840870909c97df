"""The blocking client: `core`'s requests carried by an `httpx.Client`."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from runwatch.client import core
from runwatch.client.errors import Cancelled, RunwatchError


class Client:
    """A runwatch API client. `organisation` is needed by the warehouse-connection calls
    (their URLs name it); `policy` bounds retries."""

    def __init__(self, base_url: str, token: str, *, organisation: int | str | None = None,
                 policy: core.RetryPolicy | None = None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.organisation = organisation
        self.policy = policy or core.RetryPolicy()
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"},
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drive(self, gen: Generator[Any, Any, Any]) -> Any:
        step = next(gen)
        while True:
            if isinstance(step, core.Sleep):
                time.sleep(step.seconds)
                answer: Any = None
            else:
                try:
                    r = self._http.request(step.method, step.path, json=step.json,
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

    def send(self, request: core.Request) -> Any:
        """One request, retried by the policy; the decoded answer."""
        return self._drive(core.exchange(request, self.policy))

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        """`data` of a GraphQL answer; GraphQLError when it has `errors`."""
        try:
            body = self.send(core.graphql_request(query, variables))
        except RunwatchError as exc:
            raise core.graphql_http_error(exc) from None
        return core.graphql_result(body)

    # ---- warehouse-connection runs

    def _org(self) -> int | str:
        if self.organisation is None:
            raise RunwatchError("Client(organisation=...) is needed for warehouse runs")
        return self.organisation

    def start_run(self, connection_id: int | str) -> int:
        """Pre-create a run of a connection (what the recurring task does); its id."""
        body = self.send(core.start_request(self._org(), connection_id))
        return int(body["run_id"])

    def report(self, connection_id: int | str, report: core.Report,
               failure: BaseException | None = None) -> None:
        self.send(core.report_request(self._org(), connection_id, report, failure))

    @contextmanager
    def run(self, connection_id: int | str, run_id: int | None = None) -> Iterator[core.Report]:
        """Pre-create a run (unless `run_id` names one already created), yield its report
        for the block to fill, then report success, or failure with the exception's
        message (the exception is re-raised)."""
        report = core.Report(run_id=run_id if run_id is not None
                             else self.start_run(connection_id))
        try:
            yield report
        except BaseException as exc:
            try:
                self.report(connection_id, report, failure=exc)
            except RunwatchError as lost:  # the block's exception is the one to see
                exc.add_note(f"runwatch: the failure report of run {report.run_id} was "
                             f"not sent: {lost}")
            raise
        self.report(connection_id, report)

    # ---- ELT runs

    @contextmanager
    def elt_run(self, pipeline_id: int | str | None = None, *, run_id: int | str | None = None,
                gateway: bool = False, max_items: int = 50, max_seconds: float = 2.0,
                **fields: Any) -> Iterator[EltRun]:
        """Create a running run of a pipeline (or start the pending run `run_id`; with
        `gateway=True` through the gateway routes, with a gateway token), yield it for
        logs, samples and summary, then finish it: succeeded, or failed with the
        exception's message (re-raised). A `Cancelled` leaves the run as the server has
        it and is re-raised."""
        job = EltRun(self, core.new_elt_buffer(pipeline_id, run_id, gateway, max_items,
                                               max_seconds))
        if run_id is None:
            job.buffer.take(self.send(core.create_elt_request(pipeline_id or "", **fields)))
            job.buffer.path = f"{core.ELT_RUNS}/{job.buffer.run['id']}"
        else:
            job._send_all([core.claim_request(job.buffer.path)])
            job.buffer.check()
        try:
            yield job
        except Cancelled:
            job._drop_pending()
            raise
        except BaseException as exc:
            try:
                job._send_all(job.buffer.drain(final=core.finish_body(exc)), final=True)
            except RunwatchError as lost:
                exc.add_note(f"runwatch: the failure of run {job.id} was not reported: "
                             f"{lost}")
            raise
        job._send_all(job.buffer.drain(final=core.finish_body(None)), final=True)


class EltRun:
    """A running ELT run: `log`, `sample` and `summary` are buffered and sent in batches
    (by size, by age at the next call, and at the end); each answer says whether the run was
    cancelled, and the next call raises `Cancelled`."""

    def __init__(self, client: Client, buffer: core.EltBuffer) -> None:
        self._client = client
        self.buffer = buffer

    @property
    def id(self) -> str:
        return str(self.buffer.run.get("id"))

    @property
    def cancelled(self) -> bool:
        return self.buffer.cancelled

    def _send_all(self, requests: list[core.Request], final: bool = False) -> None:
        for request in requests:
            try:
                self.buffer.take(self._client.send(request))
            except Cancelled as exc:
                self.buffer.cancelled = True
                if exc.body and isinstance(exc.body, dict):
                    self.buffer.run = {**self.buffer.run, "status": "cancelled"}
                if final:
                    return
                raise

    def _drop_pending(self) -> None:
        self.buffer.drain()

    def _maybe_flush(self) -> None:
        self.buffer.check()
        if self.buffer.due():
            self.flush()

    def log(self, message: str, level: str = "info") -> None:
        self.buffer.log(message, level)
        self._maybe_flush()

    def sample(self, **point: Any) -> None:
        """One telemetry point: rows, bytes, rowsDelta, bytesDelta, progress, phase,
        resource (`at` defaults to now)."""
        self.buffer.sample(**point)
        self._maybe_flush()

    def summary(self, **values: Any) -> None:
        """Shallow-merge into the run's telemetry summary (rowsLoaded, bytesLoaded,
        progress, currentPhase, currentResource), sent with the next flush."""
        self.buffer.set_summary(**values)
        self._maybe_flush()

    def flush(self) -> None:
        self._send_all(self.buffer.drain())
        self.buffer.check()

    def check_cancel(self) -> None:
        """Flush what waits (or ask the server) and raise `Cancelled` if the run was
        cancelled."""
        if self.buffer.waiting:
            self.flush()
        else:
            self.buffer.take(self._client.send(core.Request("GET", self.buffer.path)))
        self.buffer.check()
