"""uvicorn's WebSocket protocol (websockets' sans-I/O one), lighter for every open socket.

An open subscription is mostly its socket, and a socket mostly waits. For the socket's whole
life uvicorn's `WebSocketsSansIOProtocol` keeps:

- the handshake's response (websockets `Headers`), which nothing reads once it is sent (the
  parsed request stays: websockets' parser keeps it too);
- an `asyncio.Queue` for the application's `receive` and an `asyncio.Event` for write flow
  control: five `collections.deque`s, each allocating a block of 64 slots at once (about
  3 KB), to hold at most a message or two (uvicorn pauses reading after every message until
  the application has taken it).

`LeanWebSocketProtocol` is that protocol with `Inbox` and `Flag` in place of the queue and the
event (the only operations uvicorn calls on them), and it lets go of the handshake's response
once it is sent. The frames, the keep-alive pings, the close handshake, the back-pressure and
every ASGI message are uvicorn's own code.

`runwatch serve` passes `UVICORN_WS` to uvicorn (an import string, so that `--workers` can
hand it to its child processes); uvicorn's own command line takes it too
(`--ws runwatch.ws_protocol:LeanWebSocketProtocol`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

UVICORN_WS = "runwatch.ws_protocol:LeanWebSocketProtocol"


def _wake_first(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
            return


class Inbox:
    """An unbounded FIFO with the `put_nowait`, `get` and `empty` of `asyncio.Queue`.

    Items are only ever in the list: a waiter's future is a wake-up, never the carrier of an
    item, so a getter cancelled after its wake-up loses nothing (it wakes the next one)."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiters: list[asyncio.Future[None]] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiters:
            _wake_first(self._waiters)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            waiters = self._waiters
            if waiters is None:
                waiters = self._waiters = []
            waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if self._items and waiter.done() and not waiter.cancelled():
                    _wake_first(waiters)  # the wake-up was ours: pass it on
                raise
            finally:
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters and self._waiters is waiters:
                    self._waiters = None
        return self._items.pop(0)


class Flag:
    """`asyncio.Event`'s `set`, `clear`, `is_set` and `wait`, without a deque per flag."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        waiters = self._waiters
        waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if waiter in waiters:
                waiters.remove(waiter)


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        writable = Flag()
        writable.set()
        self.writable = writable  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete:
            self.response = None  # answered (or refused): only the handshake read it


__all__ = ["UVICORN_WS", "Flag", "Inbox", "LeanWebSocketProtocol"]
