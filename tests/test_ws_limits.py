"""Issue 10, the WebSocket findings: a socket obeys revocation (1) and the rate and size limits
(5) as HTTP does; sockets and subscriptions per token are bounded. The sockets are driven
in-process through the ASGI app (graphql-transport-ws, and the legacy graphql-ws once)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from runwatch.app import create_app
from runwatch.models import Connection
from runwatch.resolvers.tokens import revoke_token
from tests.conftest import Tenant
from tests.elt_helpers import create_pipeline, create_run

SUBSCRIBE = "subscription($id: ID!) { runUpdates(id: $id) { run { id status } } }"
CREATE = ('mutation { createConnection(input: {name: "from-socket", warehouseType: "snowflake"})'
          " { __typename } }")


class Socket:
    """A graphql-transport-ws (or graphql-ws) client of the ASGI app, in this event loop."""

    def __init__(self, app: Any, token: str | None, *, header: bool = False,
                 protocol: str = "graphql-transport-ws", client: str = "127.0.0.1") -> None:
        self.app, self.token, self.header, self.protocol = app, token, header, protocol
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.client = client
        self.task: asyncio.Task[None] | None = None
        self.closed: dict[str, Any] | None = None

    async def open(self) -> dict[str, Any]:
        """Connects and sends `connection_init`: the ack, or the close."""
        headers = [(b"host", b"runwatch.test"),
                   (b"sec-websocket-protocol", self.protocol.encode())]
        if self.token and self.header:
            headers.append((b"authorization", f"Bearer {self.token}".encode()))
        scope = {
            "type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "scheme": "ws", "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
            "root_path": "", "headers": headers, "subprotocols": [self.protocol],
            "client": (self.client, 50000), "server": ("runwatch.test", 80),
        }
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "websocket.connect"})
        accepted = await asyncio.wait_for(self.outbox.get(), 5)
        assert accepted["type"] == "websocket.accept", accepted
        init: dict[str, Any] = {"type": "connection_init"}
        if self.token and not self.header:
            init["payload"] = {"Authorization": f"Bearer {self.token}"}
        await self.send(init)
        return await self.recv()

    async def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await self.inbox.put({"type": "websocket.receive", "text": text})

    async def subscribe(self, op: str, query: str, **variables: Any) -> None:
        kind = "subscribe" if self.protocol == "graphql-transport-ws" else "start"
        await self.send({"id": op, "type": kind,
                         "payload": {"query": query, "variables": variables}})

    async def recv(self, timeout: float = 5) -> dict[str, Any]:
        if self.closed is not None:
            return self.closed
        sent = await asyncio.wait_for(self.outbox.get(), timeout)
        if sent["type"] == "websocket.close":
            self.closed = {"type": "close", "code": sent.get("code"),
                           "reason": sent.get("reason")}
            return self.closed
        return json.loads(sent.get("text") or sent.get("bytes"))

    async def answer(self, id: str, timeout: float = 5) -> list[dict[str, Any]]:
        """The messages for operation `id` until it completed or errored (or the close)."""
        messages = []
        deadline = time.monotonic() + timeout
        while True:
            message = await self.recv(max(deadline - time.monotonic(), 0.01))
            if message["type"] == "close":
                return [*messages, message]
            if message.get("id") != id:
                continue
            messages.append(message)
            if message["type"] in {"complete", "error"}:
                return messages

    async def first(self, id: str, timeout: float = 5) -> dict[str, Any]:
        """The first message for operation `id` (or the close)."""
        while True:
            message = await self.recv(timeout)
            if message["type"] == "close" or message.get("id") == id:
                return message

    async def shut(self) -> None:
        await self.inbox.put({"type": "websocket.disconnect", "code": 1000})
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 5)
            except TimeoutError:
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.task


@contextlib.asynccontextmanager
async def sockets(app: Any) -> AsyncIterator[list[Socket]]:
    opened: list[Socket] = []
    try:
        yield opened
    finally:
        for s in opened:
            await s.shut()


async def open_socket(app: Any, opened: list[Socket], token: str | None,
                      **kwargs: Any) -> tuple[Socket, dict[str, Any]]:
    s = Socket(app, token, **kwargs)
    opened.append(s)
    return s, await s.open()


@pytest.fixture
def make_app(settings):
    """An app with other settings, on the test database (its ORM is already up)."""
    def build(**changes: Any) -> Any:
        return create_app(replace(settings, **changes))
    return build


async def live_run(client, tenant: Tenant) -> str:
    pipeline = await create_pipeline(client, tenant, name=f"p{time.monotonic_ns()}")
    return str((await create_run(client, tenant, pipeline["id"]))["id"])


# ------------------------------------------------------------ 1. revocation on an open socket


@pytest.mark.parametrize("header", [False, True], ids=["init-payload", "header"])
async def test_a_revoked_token_closes_its_live_subscription(app, client, tenant, header):
    run = await live_run(client, tenant)
    token = tenant.tokens["admin"]
    async with sockets(app) as opened:
        ws, ack = await open_socket(app, opened, token, header=header)
        assert ack["type"] == "connection_ack", ack
        await ws.subscribe("1", SUBSCRIBE, id=run)
        first = await ws.recv()
        assert first["type"] == "next" and first["payload"]["data"]["runUpdates"], first
        await revoke_token(token=token)
        started = time.monotonic()
        closed = await ws.recv(timeout=5)
        assert closed["type"] == "close", closed
        assert closed["code"] == 4401 and "revoked" in closed["reason"], closed
        assert time.monotonic() - started < 3


async def test_a_revoked_token_cannot_start_another_operation(app, client, tenant):
    token = tenant.tokens["admin"]
    async with sockets(app) as opened:
        ws, ack = await open_socket(app, opened, token)
        assert ack["type"] == "connection_ack", ack
        await ws.subscribe("1", "{ connections { nodes { id } } }")
        assert [m["type"] for m in await ws.answer("1")] == ["next", "complete"]
        await revoke_token(token=token)
        await ws.subscribe("2", CREATE)
        answer = await ws.answer("2")
        assert answer == [{"type": "close", "code": 4401, "reason": answer[-1]["reason"]}], answer
    assert not await Connection.filter(name="from-socket").exists()


async def test_revocation_within_the_token_cache_bound(make_app, client, tenant):
    """With a token cache of 2 s, the socket closes within the cache's seconds (+ the 1 s
    re-check), as HTTP refuses the token within the cache's seconds."""
    app = make_app(token_cache_seconds=2)
    run = await live_run(client, tenant)
    token = tenant.tokens["read"]
    async with sockets(app) as opened:
        ws, ack = await open_socket(app, opened, token)
        assert ack["type"] == "connection_ack", ack
        await ws.subscribe("1", SUBSCRIBE, id=run)
        assert (await ws.recv())["type"] == "next"
        await revoke_token(token=token)
        started = time.monotonic()
        closed = await ws.recv(timeout=6)
        assert closed["type"] == "close" and closed["code"] == 4401, closed
        assert time.monotonic() - started < 2 + 1 + 1


async def test_the_legacy_protocol_is_guarded_too(app, client, tenant):
    token = tenant.tokens["admin"]
    async with sockets(app) as opened:
        ws, ack = await open_socket(app, opened, token, protocol="graphql-ws")
        assert ack["type"] == "connection_ack", ack
        await revoke_token(token=token)
        await ws.subscribe("1", CREATE)
        closed = await ws.recv()
        assert closed["type"] == "close" and closed["code"] == 4401, closed
    assert not await Connection.filter(name="from-socket").exists()


# --------------------------------------------------------------- 5. rate and size limits


async def test_socket_operations_count_against_the_tokens_rate_limit(make_app, tenant):
    import httpx

    app = make_app(rate_limit_per_minute=6)
    token = tenant.tokens["read"]
    async with sockets(app) as opened:
        ws, ack = await open_socket(app, opened, token)
        assert ack["type"] == "connection_ack", ack
        outcomes = []
        for i in range(8):
            await ws.subscribe(str(i), "{ connections { nodes { id } } }")
            outcomes.append(await ws.answer(str(i)))
        ran = [o for o in outcomes if o[0]["type"] == "next"]
        refused = [o for o in outcomes if o[0]["type"] == "error"]
        assert len(ran) == 6 and len(refused) == 2, outcomes
        error = refused[0][0]["payload"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert 1 <= error["extensions"]["retryAfter"] <= 60
        assert "Rate limit exceeded" in error["message"]
    # one count: HTTP is refused too
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://runwatch.test") as c:
        r = await c.post("/graphql", json={"query": "{ __typename }"},
                         headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 429


async def test_a_message_over_the_body_limit_closes_the_socket(make_app, tenant):
    app = make_app(max_body_bytes=4096)
    async with sockets(app) as opened:
        ws, ack = await open_socket(app, opened, tenant.tokens["read"])
        assert ack["type"] == "connection_ack", ack
        await ws.subscribe("1", "{ connections { nodes { id } } }", pad="x" * 3000)
        assert [m["type"] for m in await ws.answer("1")] == ["next", "complete"]
        await ws.subscribe("2", "{ connections { nodes { id } } }", pad="x" * 5000)
        closed = await ws.recv()
        assert closed["type"] == "close" and closed["code"] == 1009, closed
        assert "4096" in closed["reason"]


async def test_sockets_per_token_are_bounded(make_app, tenant, other_tenant):
    app = make_app(ws_max_sockets_per_token=2)
    async with sockets(app) as opened:
        for _ in range(2):
            _, ack = await open_socket(app, opened, tenant.tokens["read"])
            assert ack["type"] == "connection_ack", ack
        third, answer = await open_socket(app, opened, tenant.tokens["read"])
        if answer["type"] == "connection_ack":
            answer = await third.recv()
        assert answer["type"] == "close" and answer["code"] == 4429, answer
        assert "at most 2" in answer["reason"]
        _, ack = await open_socket(app, opened, other_tenant.tokens["read"])  # its own count
        assert ack["type"] == "connection_ack", ack
        await opened[0].shut()
        opened.pop(0)
        await asyncio.sleep(0.05)
        _, ack = await open_socket(app, opened, tenant.tokens["read"])  # a slot freed
        assert ack["type"] == "connection_ack", ack


async def test_subscriptions_per_socket_and_per_token_are_bounded(make_app, client, tenant):
    app = make_app(ws_max_subscriptions_per_socket=2, ws_max_subscriptions_per_token=3)
    runs = [await live_run(client, tenant) for _ in range(4)]
    token = tenant.tokens["read"]
    async with sockets(app) as opened:
        one, _ = await open_socket(app, opened, token)
        two, _ = await open_socket(app, opened, token)
        for i in (0, 1):
            await one.subscribe(str(i), SUBSCRIBE, id=runs[i])
            assert (await one.first(str(i)))["type"] == "next"
        await one.subscribe("2", SUBSCRIBE, id=runs[2])
        [refused] = await one.answer("2")
        assert refused["type"] == "error", refused
        assert refused["payload"][0]["extensions"] == {"code": "TOO_MANY_SUBSCRIPTIONS",
                                                       "maximum": 2}
        await two.subscribe("a", SUBSCRIBE, id=runs[2])
        assert (await two.first("a"))["type"] == "next"
        await two.subscribe("b", SUBSCRIBE, id=runs[3])
        [refused] = await two.answer("b")
        assert refused["payload"][0]["extensions"] == {"code": "TOO_MANY_SUBSCRIPTIONS",
                                                       "maximum": 3}, refused


def test_a_new_event_loop_gets_its_own_token_sweeper():
    """The sockets' token re-check runs in one task per app; an app served again by another
    event loop (the first one stopped with the task pending) starts a new one there."""
    from runwatch.ws import SocketLimits

    async def no_caller(token: str | None) -> None:
        return None

    limits = SocketLimits(authenticator=no_caller, limiter=None, per_minute=0,  # type: ignore[arg-type]
                          max_sockets=1, max_per_socket=1, max_per_token=1,
                          max_message_bytes=1024, recheck_seconds=3600)

    class Idle:  # a socket running no operation: the sweep leaves it alone
        operations = 0
        token = None

    async def watch_once() -> asyncio.Task[None]:
        limits.watch(Idle())  # type: ignore[arg-type]
        assert limits.sweeper is not None
        await asyncio.sleep(0)
        assert not limits.sweeper.done()  # asleep until the next round
        return limits.sweeper

    old_loop = asyncio.new_event_loop()
    try:
        first = old_loop.run_until_complete(watch_once())
    finally:
        old_loop.close()  # stopped with its sweeper pending (not cancelled: never done)
    assert not first.done()
    new_loop = asyncio.new_event_loop()
    try:
        second = new_loop.run_until_complete(watch_once())
        assert second is not first and second.get_loop() is new_loop
        second.cancel()
        new_loop.run_until_complete(asyncio.gather(second, return_exceptions=True))
    finally:
        new_loop.close()
