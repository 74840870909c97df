"""runwatch's lighter uvicorn WebSocket protocol (`runwatch.ws_protocol`): its queue and flag
behave as asyncio's, and a real uvicorn serving with it keeps order, back-pressure and the
close handshake."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from runwatch.app import RunwatchGraphQL, create_app
from runwatch.auth import AuthMiddleware
from runwatch.faults import DatabaseFaults
from runwatch.limits import RateLimitMiddleware
from runwatch.settings import Settings
from runwatch.ws_protocol import Flag, Inbox, LeanWebSocketProtocol
from tests.conftest import uvicorn_on_loopback


async def test_inbox_is_first_in_first_out_and_wakes_its_getter() -> None:
    inbox = Inbox()
    assert inbox.empty()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert inbox.qsize() == 2
    assert [await inbox.get(), await inbox.get()] == [1, 2]
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not getter.done()
    inbox.put_nowait(3)
    assert await asyncio.wait_for(getter, 1) == 3
    assert inbox.empty()


async def test_inbox_loses_nothing_to_a_cancelled_getter() -> None:
    inbox = Inbox()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("a")  # wakes the first getter...
    first.cancel()  # ...which is cancelled before it runs: the item goes to the second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) == "a"
    # Two getters, two items: each gets one, in order.
    getters = [asyncio.create_task(inbox.get()) for _ in range(2)]
    await asyncio.sleep(0)
    inbox.put_nowait("b")
    inbox.put_nowait("c")
    assert await asyncio.wait_for(asyncio.gather(*getters), 1) == ["b", "c"]
    assert inbox._waiters is None  # nothing left behind


async def test_flag_waits_until_set_and_wakes_every_waiter() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert await flag.wait() is True  # set: at once
    flag.clear()
    late = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not late.done()
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    assert flag._waiters == []  # a cancelled waiter is not kept


MESSAGES = 400
SIZE = 64 * 1024  # 25 MB in all: far past the transport's high-water mark


async def flood(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    """Accept, echo the first message, send MESSAGES large ones, then close (4000)."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    first = await receive()
    await send({"type": "websocket.send", "text": first["text"]})
    for n in range(MESSAGES):
        await send({"type": "websocket.send", "text": f"{n:08d}" + "x" * (SIZE - 8)})
    await send({"type": "websocket.close", "code": 4000})


async def test_uvicorn_with_the_lean_protocol_keeps_order_back_pressure_and_close() -> None:
    async with uvicorn_on_loopback(flood) as server, connect(
            f"ws://127.0.0.1:{server.config.port}/", max_size=2 * SIZE, compression=None) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 5) == "hello"
        (protocol,) = server.server_state.connections
        assert isinstance(protocol, LeanWebSocketProtocol)
        assert isinstance(protocol.queue, Inbox)
        assert isinstance(protocol.writable, Flag)
        assert protocol.response is None  # the handshake's answer, sent and let go
        # The client reads nothing for a while: the server's writes fill the transport's
        # buffer, uvicorn waits on the flag, and resumes once the client reads.
        await asyncio.sleep(0.5)
        assert not protocol.writable.is_set()
        got = [await asyncio.wait_for(ws.recv(), 10) for _ in range(MESSAGES)]
        assert [int(m[:8]) for m in got] == list(range(MESSAGES))
        with pytest.raises(Exception):  # noqa: B017 (websockets' ConnectionClosed)
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4000


@pytest.mark.parametrize("metrics", [False, True])
def test_the_graphql_sockets_lane_has_every_middleware_that_acts_on_sockets(
    metrics: bool, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """A WebSocket to /graphql skips the router and what passes sockets through, not a
    middleware that acts on them: the lane is every middleware not `http_only`, in order."""
    app = create_app(Settings(database_url=f"sqlite://{tmp_path}/lane.db", metrics=metrics),
                     run_background=False)
    chain = []
    layer = app.socket_stack  # type: ignore[attr-defined]
    while not isinstance(layer, RunwatchGraphQL):
        chain.append(type(layer))
        layer = layer.app
    acting = [m.cls for m in app.user_middleware if not getattr(m.cls, "http_only", False)]
    assert chain == acting == [DatabaseFaults, AuthMiddleware, RateLimitMiddleware]
    assert len(app.user_middleware) == 4 + metrics  # body size (and metrics): HTTP only
