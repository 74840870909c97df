"""A real HTTP receiver on loopback for the webhook tests.

`async with Receiver.running() as receiver:` listens on 127.0.0.1 on a free port in the
test's event loop, records every request (method, path, lower-cased headers, raw body) and
answers what the test planned: `receiver.plan = [500, DROP, 200]` answers the first request
with 500, drops the second connection without an answer and answers 200 from then on
(`receiver.default`). `Answer(status, delay=3)` answers after a delay, `Answer(drip=0.5)`
sends its body a byte at a time. Everything it started
(the listening socket, each connection and its handler task) is closed when the block ends,
and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

HEAD_TIMEOUT = 5.0


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0  # seconds to sleep before answering
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    drop: bool = False  # close the connection without answering
    drip: float = 0.0  # seconds between the bytes of the body (a receiver that trickles)


DROP = Answer(drop=True)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request had fully arrived


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.plan: list[int | Answer] = []
        self.default: int | Answer = 200
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._arrived = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls) -> AsyncIterator[Receiver]:
        receiver = cls()
        await receiver.start()
        try:
            yield receiver
        finally:
            await receiver.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await asyncio.wait_for(self._server.wait_closed(), 5)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least `count` requests have arrived (at most `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"expected {count} request(s) within {timeout}s, got {len(self.requests)}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return self.requests

    def _answer_for(self, index: int) -> Answer:
        planned = self.plan[index] if index < len(self.plan) else self.default
        return planned if isinstance(planned, Answer) else Answer(status=planned)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            # One request per connection (answers say `connection: close`).
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                    ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = await asyncio.wait_for(reader.readexactly(length), HEAD_TIMEOUT)
            index = len(self.requests)
            self.requests.append(Received(method, path, headers, body, time.monotonic()))
            self._arrived.set()
            answer = self._answer_for(index)
            if answer.delay:
                await asyncio.sleep(answer.delay)
            if answer.drop:
                return
            reason = http.HTTPStatus(answer.status).phrase
            extra = "".join(f"{k}: {v}\r\n" for k, v in answer.headers.items())
            head = (
                f"HTTP/1.1 {answer.status} {reason}\r\ncontent-type: text/plain\r\n"
                f"content-length: {len(answer.body)}\r\nconnection: close\r\n{extra}\r\n"
            ).encode("latin-1")
            chunks = ([head, *(answer.body[i:i + 1] for i in range(len(answer.body)))]
                      if answer.drip else [head + answer.body])
            with contextlib.suppress(ConnectionError):
                for n, chunk in enumerate(chunks):
                    if n and answer.drip:
                        await asyncio.sleep(answer.drip)
                    writer.write(chunk)
                    await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 2)
            self._tasks.discard(task)
