"""Abuse limits: per-token rate limits (429 + Retry-After in each contract's error shape), the
request body size limit (413, by Content-Length and while streaming), token rotation with an
overlap window, and revocation that takes effect within the token cache's TTL (at most 60 s).

Apps with other settings are built per test and called without a lifespan (the session app
already initialised the ORM)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from runwatch.app import create_app
from runwatch.auth import MAX_CACHE_SECONDS, Authenticator
from runwatch.limits import RateLimiter, RateLimitMiddleware
from runwatch.models import Gateway, Pipeline, ServiceToken
from runwatch.resolvers.errors import InvalidInput, NotFound
from runwatch.resolvers.tokens import (
    authenticate,
    create_token,
    revoke_token,
    rotate_token,
)
from runwatch.settings import Settings
from tests.conftest import Tenant
from tests.elt_helpers import make_gateway
from tests.test_cli import run_cli

BASE = "http://runwatch.test"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def client_of(app: Any, address: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 123)),
                             base_url=BASE)


def middleware_of(app: Any, kind: type) -> Any:
    """The instance of middleware `kind` in an app's stack (built here, before any request)."""
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()
    node = app.middleware_stack
    while not isinstance(node, kind):
        node = node.app
    return node


def limited(settings: Settings, per_minute: int, **changes: Any) -> tuple[Any, Clock]:
    """An app limited to `per_minute` requests per minute, on a clock the test moves."""
    app = create_app(replace(settings, rate_limit_per_minute=per_minute, **changes))
    clock = Clock()
    middleware_of(app, RateLimitMiddleware).limiter.clock = clock
    return app, clock


# One request per contract: (surface, method, path, body, scopes of the token it needs).
GRAPHQL_QUERY = {"query": "{ __typename }"}


def request_for(surface: str, tenant: Tenant, gateway_token: str | None = None
                ) -> tuple[str, str, dict[str, Any] | None, dict[str, str]]:
    if surface == "graphql":
        return "POST", "/graphql", GRAPHQL_QUERY, tenant.headers("read")
    if surface == "elt":
        return "GET", "/api/elt/runs/", None, tenant.headers("read")
    if surface == "agent":
        return "GET", "/api/agent/manifest/", None, {"Authorization": f"Bearer {gateway_token}"}
    if surface == "warehouse":
        return "GET", tenant.prefix + "/", None, tenant.headers("read")
    assert surface == "watcher"
    return "GET", "/pipeline", None, tenant.headers("read")


SURFACES = ("graphql", "elt", "agent", "warehouse", "watcher")


def assert_shape(surface: str, r: httpx.Response, status: int, code: str, words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    if surface == "graphql":
        assert set(body) == {"errors"}, body
        (error,) = body["errors"]
        assert error["extensions"] == {"code": code}, body
        assert words in error["message"], body
    elif surface in {"elt", "agent"}:
        assert set(body) == {"error"} and words in body["error"], body
    else:
        assert set(body) == {"detail"} and words in body["detail"], body


# ----------------------------------------------------------------------------------------------
# rate limits


@pytest.mark.parametrize("surface", SURFACES)
async def test_rate_limit_answers_429_with_retry_after_in_each_contracts_shape(
    settings, tenant, other_tenant, surface
):
    app, clock = limited(settings, 3)
    gateway = (await make_gateway(tenant)).token if surface == "agent" else None
    method, path, body, headers = request_for(surface, tenant, gateway)
    async with client_of(app) as c:
        for _ in range(3):
            r = await c.request(method, path, json=body, headers=headers)
            assert r.status_code == 200, r.text
        r = await c.request(method, path, json=body, headers=headers)
        assert_shape(surface, r, 429, "RATE_LIMITED", "Rate limit exceeded")
        assert r.headers["retry-after"] == "60"

        # Another token (another organisation's, or another of the same one) has its own count.
        other_gateway = (await make_gateway(other_tenant)).token if surface == "agent" else None
        _, other_path, _, other = request_for(surface, other_tenant, other_gateway)
        assert (await c.request(method, other_path, json=body, headers=other)).status_code == 200
        if surface != "agent":
            same_org = {"Authorization": f"Bearer {tenant.tokens['admin']}"}
            assert (await c.request(method, path, json=body, headers=same_org)
                    ).status_code == 200

        clock.advance(30)
        r = await c.request(method, path, json=body, headers=headers)
        assert r.status_code == 429 and r.headers["retry-after"] == "30"
        clock.advance(29.5)
        r = await c.request(method, path, json=body, headers=headers)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"  # rounded up
        clock.advance(0.5)  # the window is over: a fresh budget
        for _ in range(3):
            assert (await c.request(method, path, json=body, headers=headers)
                    ).status_code == 200
        assert (await c.request(method, path, json=body, headers=headers)).status_code == 429


async def test_rate_limit_is_off_by_default(client, tenant, settings):
    assert settings.rate_limit_per_minute == 0
    assert Settings.from_env({}).rate_limit_per_minute == 0  # the embedded SQLite default
    assert Settings.from_env(
        {"DATABASE_URL": "postgres://u@db/runwatch"}).rate_limit_per_minute == 1200
    assert middleware_of(create_app(settings), RateLimitMiddleware).limiter is None
    for _ in range(100):
        r = await client.post("/graphql", json=GRAPHQL_QUERY, headers=tenant.headers("read"))
        assert r.status_code == 200


async def test_requests_without_a_valid_token_are_limited_by_client_address(settings, tenant):
    app, _ = limited(settings, 2)
    bad = {"Authorization": "Bearer rw_000000000000_nope"}
    async with client_of(app) as c, client_of(app, "10.0.0.2") as elsewhere:
        assert (await c.get("/api/elt/runs/")).status_code == 401
        assert (await c.get("/api/elt/runs/", headers=bad)).status_code == 401
        r = await c.get("/api/elt/runs/")
        assert r.status_code == 429 and r.json() == {"error": r.json()["error"]}
        assert (await c.get("/pipeline", headers=bad)).status_code == 429
        # Another address has its own count; a valid token from the same address too.
        assert (await elsewhere.get("/api/elt/runs/")).status_code == 401
        assert (await c.get("/api/elt/runs/", headers=tenant.headers("read"))).status_code == 200


async def test_health_and_the_watcher_root_are_not_limited(settings, tenant):
    app, _ = limited(settings, 1)
    async with client_of(app) as c:
        for _ in range(5):
            assert (await c.get("/health")).status_code == 200
            assert (await c.get("/")).status_code == 200
        assert (await c.get("/pipeline", headers=tenant.headers("read"))).status_code == 200
        assert (await c.get("/pipeline", headers=tenant.headers("read"))).status_code == 429

    prefixed, _ = limited(settings, 1, watcher_prefix="/watcher")
    async with client_of(prefixed) as c:
        for _ in range(3):
            assert (await c.get("/watcher/")).status_code == 200
        r = await c.get("/watcher/pipeline", headers=tenant.headers("read"))
        assert r.status_code == 200
        r = await c.get("/watcher/pipeline", headers=tenant.headers("read"))
        assert r.status_code == 429 and "detail" in r.json()


async def test_a_refused_websocket_handshake_gets_429_or_a_close():
    async def inner(scope, receive, send):
        await send({"type": "websocket.accept"})

    clock = Clock()
    middleware = RateLimitMiddleware(inner, per_minute=1, limiter=RateLimiter(1, clock=clock))

    async def connect(extensions: dict[str, Any]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/graphql", "headers": [], "extensions":
                 extensions, "client": ("127.0.0.1", 1), "state": {"caller": None}}
        await middleware(scope, receive, send)
        return sent

    assert await connect({}) == [{"type": "websocket.accept"}]
    denied = await connect({"websocket.http.response": {}})
    assert denied[0]["type"] == "websocket.http.response.start"
    assert denied[0]["status"] == 429 and (b"retry-after", b"60") in denied[0]["headers"]
    assert json.loads(denied[1]["body"])["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert await connect({}) == [{"type": "websocket.close", "code": 1008}]


def test_the_rate_limiter_keeps_bounded_memory():
    clock = Clock()
    limiter = RateLimiter(1, max_keys=3, clock=clock)
    for key in range(10):
        assert limiter.hit(key) == 0
        clock.advance(1)
    assert len(limiter) == 3
    assert limiter.hit(9) > 0  # a live window is kept
    clock.advance(61)
    assert limiter.hit("new") == 0
    assert len(limiter) == 1  # the expired windows are gone


# ----------------------------------------------------------------------------------------------
# body size

LIMIT = 2048
PAD = "x" * (LIMIT * 4)


def oversized_request(surface: str, tenant: Tenant, gateway_token: str | None
                      ) -> tuple[str, dict[str, Any], dict[str, str]]:
    """A request that would be valid (and write something) but for its size."""
    if surface == "graphql":
        return "/graphql", {"query": '{ __typename }', "variables": {"pad": PAD}}, \
            tenant.headers("admin")
    if surface == "elt":
        return "/api/elt/pipelines/", {"name": "p", "description": PAD}, tenant.headers("write")
    if surface == "agent":
        return ("/api/agent/heartbeat/", {"version": "1", "labels": {"pad": PAD}},
                {"Authorization": f"Bearer {gateway_token}"})
    if surface == "warehouse":
        return (tenant.prefix + "/", {"name": "w", "type": "snowflake", "description": PAD},
                tenant.headers("write"))
    return "/pipeline", {"name": "p", "pad": PAD}, tenant.headers("write")


async def chunks(data: bytes, size: int, counter: list[int]) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        counter[0] += 1
        yield data[start:start + size]


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_over_the_limit_is_refused_with_413_before_any_handler(
    settings, tenant, surface, framing
):
    app = create_app(replace(settings, max_body_bytes=LIMIT))
    agent = await make_gateway(tenant) if surface == "agent" else None
    path, body, headers = oversized_request(surface, tenant, agent.token if agent else None)
    data = json.dumps(body).encode()
    pulled = [0]
    async with client_of(app) as c:
        if framing == "content-length":
            r = await c.post(path, content=data, headers={
                **headers, "Content-Type": "application/json"})
        else:
            r = await c.post(path, content=chunks(data, 256, pulled), headers={
                **headers, "Content-Type": "application/json"})
            assert "content-length" not in r.request.headers
            # Refused once the limit was passed: the rest of the body was never read.
            assert pulled[0] <= LIMIT // 256 + 1 < len(data) // 256
    assert_shape(surface, r, 413, "PAYLOAD_TOO_LARGE", f"the limit is {LIMIT} bytes")
    assert await Pipeline.filter(organisation_id=tenant.org_id).count() == 0
    if agent:
        assert (await Gateway.get(id=agent.id)).last_seen_at is None


async def test_a_body_within_the_limit_goes_through_whole_either_way(settings, tenant):
    app = create_app(replace(settings, max_body_bytes=LIMIT))
    description = "d" * (LIMIT - 200)
    data = json.dumps({"name": "streamed", "description": description}).encode()
    assert len(data) <= LIMIT
    async with client_of(app) as c:
        r = await c.post("/api/elt/pipelines/", content=chunks(data, 100, [0]), headers={
            **tenant.headers("write"), "Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        assert r.json()["pipeline"]["description"] == description
        r = await c.post("/api/elt/pipelines/", json={"name": "sized", "description": "x"},
                         headers=tenant.headers("write"))
        assert r.status_code == 201, r.text
        assert (await c.get("/health")).status_code == 200


async def test_the_session_app_allows_a_mebibyte(client, tenant, settings):
    assert settings.max_body_bytes == 1_048_576
    r = await client.post("/graphql", json={"query": "{ __typename }",
                                            "variables": {"pad": "x" * 500_000}},
                          headers=tenant.headers("read"))
    assert r.status_code == 200
    r = await client.post("/graphql", content=b" " * 1_048_577,
                          headers={**tenant.headers("read"), "Content-Type": "application/json"})
    assert r.status_code == 413


# ----------------------------------------------------------------------------------------------
# rotation


async def expire(token_id: int) -> None:
    """Move a rotated token's overlap window into the past (the clock, in the database)."""
    await ServiceToken.filter(id=token_id).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1))


async def test_rotation_keeps_the_old_token_working_for_the_overlap_only(client, tenant):
    old = await create_token(organisation_id=tenant.org_id, scopes="read,report", name="loader")
    before = datetime.now(UTC)
    new = await rotate_token(token_id=old.id, overlap_seconds=3600)
    assert new.token != old.token and new.id != old.id
    assert (new.organisation_id, new.name, new.scopes) == (
        old.organisation_id, "loader", old.scopes)
    assert new.replaces == old.id
    assert before + timedelta(seconds=3600) <= new.replaced_until <= datetime.now(UTC) + \
        timedelta(seconds=3600)
    row = await ServiceToken.get(id=old.id)
    assert row.expires_at == new.replaced_until and row.revoked_at is None
    assert (await ServiceToken.get(id=new.id)).expires_at is None

    query = {"query": "{ __typename }"}
    for token in (old.token, new.token):  # both work during the overlap
        r = await client.post("/graphql", json=query, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert (await authenticate(token)).scopes == old.scopes

    await expire(old.id)
    assert await authenticate(old.token) is None
    r = await client.get("/api/elt/runs/", headers={"Authorization": f"Bearer {old.token}"})
    assert r.status_code == 401 and r.json() == {"error": "Invalid token."}
    r = await client.get("/api/elt/runs/", headers={"Authorization": f"Bearer {new.token}"})
    assert r.status_code == 200
    with pytest.raises(NotFound):  # an expired token cannot be rotated again
        await rotate_token(token_id=old.id)


async def test_rotation_by_token_with_no_overlap_and_its_refusals(tenant):
    old = await create_token(organisation_id=tenant.org_id, scopes="read")
    new = await rotate_token(token=old.token, overlap_seconds=0)
    assert await authenticate(old.token) is None
    assert await authenticate(new.token) is not None

    with pytest.raises(NotFound):
        await rotate_token(token=new.token[:-2] + "zz")  # the secret must match
    with pytest.raises(NotFound):
        await rotate_token(token_id=999_999)
    with pytest.raises(InvalidInput):
        await rotate_token(token=new.token, overlap_seconds=-1)
    with pytest.raises(InvalidInput):
        await rotate_token()
    await revoke_token(token_id=new.id)
    with pytest.raises(NotFound):
        await rotate_token(token_id=new.id)


async def test_rotating_again_never_extends_the_window(tenant):
    old = await create_token(organisation_id=tenant.org_id, scopes="read")
    first = await rotate_token(token_id=old.id, overlap_seconds=60)
    second = await rotate_token(token_id=old.id, overlap_seconds=86_400)
    assert second.replaced_until == first.replaced_until
    assert (await ServiceToken.get(id=old.id)).expires_at == first.replaced_until
    assert await authenticate(first.token) and await authenticate(second.token)


async def test_a_gateway_token_rotates_into_a_gateway_token(client, tenant):
    agent = await make_gateway(tenant)
    new = await rotate_token(token=agent.token)
    assert new.replaced_until - datetime.now(UTC) > timedelta(seconds=86_000)  # the default
    caller = await authenticate(new.token)
    assert caller.gateway_id == agent.id and caller.organisation_id == tenant.org_id
    for token in (agent.token, new.token):
        r = await client.get("/api/agent/manifest/", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text


async def test_a_cached_token_is_not_kept_past_its_expiry(tenant):
    old = await create_token(organisation_id=tenant.org_id, scopes="read")
    await rotate_token(token_id=old.id, overlap_seconds=3600)
    await ServiceToken.filter(id=old.id).update(
        expires_at=datetime.now(UTC) + timedelta(seconds=0.5))
    auth = Authenticator(ttl=60)
    assert await auth(old.token) is not None
    await asyncio.sleep(0.6)
    assert await auth(old.token) is None


# ----------------------------------------------------------------------------------------------
# revocation


async def test_revocation_takes_effect_when_the_cache_entry_ends(tenant):
    issued = await create_token(organisation_id=tenant.org_id, scopes="read")
    clock = Clock()
    auth = Authenticator(ttl=1, clock=clock)
    assert await auth(issued.token) is not None
    await revoke_token(token_id=issued.id)
    clock.advance(0.9)
    assert await auth(issued.token) is not None  # still cached
    clock.advance(0.1)
    assert await auth(issued.token) is None


async def test_the_token_cache_never_holds_a_token_longer_than_60_seconds(tenant):
    issued = await create_token(organisation_id=tenant.org_id, scopes="read")
    clock = Clock()
    auth = Authenticator(ttl=3600, clock=clock)
    assert auth.ttl == MAX_CACHE_SECONDS == 60
    assert await auth(issued.token) is not None
    await revoke_token(token=issued.token)
    clock.advance(59.9)
    assert await auth(issued.token) is not None
    clock.advance(0.1)
    assert await auth(issued.token) is None


async def test_revocation_reaches_the_api_within_the_cache_ttl(settings, tenant):
    app = create_app(replace(settings, token_cache_seconds=1))
    clock = Clock()
    from runwatch.auth import AuthMiddleware

    middleware_of(app, AuthMiddleware).authenticator.clock = clock
    issued = await create_token(organisation_id=tenant.org_id, scopes="read")
    headers = {"Authorization": f"Bearer {issued.token}"}
    async with client_of(app) as c:
        assert (await c.get("/pipeline", headers=headers)).status_code == 200
        await revoke_token(token_id=issued.id)
        assert (await c.get("/pipeline", headers=headers)).status_code == 200  # cached
        clock.advance(1)
        r = await c.get("/pipeline", headers=headers)
        assert r.status_code == 401 and r.json()["detail"].lower() == "invalid token."


# ----------------------------------------------------------------------------------------------
# CLI


async def test_cli_token_rotate(database_url, tenant):
    old = await create_token(organisation_id=tenant.org_id, scopes="read", name="cli")
    rotated = run_cli(database_url, "token", "rotate", str(old.id), "--overlap-seconds", "600")
    assert rotated.returncode == 0, rotated.stderr
    lines = rotated.stdout.strip().splitlines()
    new_token = lines[-1]
    assert new_token.startswith("rw_") and f"replaces token {old.id}" in lines[0]
    assert await authenticate(old.token) is not None
    new_caller = await authenticate(new_token)
    assert new_caller.organisation_id == tenant.org_id and new_caller.token_id != old.id
    expires = (await ServiceToken.get(id=old.id)).expires_at
    assert timedelta(seconds=590) < expires - datetime.now(UTC) <= timedelta(seconds=600)

    # By the token itself; the default overlap comes from the settings (environment).
    again = run_cli(database_url, "token", "rotate", new_token, "--overlap-seconds", "0")
    assert again.returncode == 0, again.stderr
    newest = again.stdout.strip().splitlines()[-1]
    assert await authenticate(new_token) is None
    assert await authenticate(newest) is not None

    unknown = run_cli(database_url, "token", "rotate", "999999")
    assert unknown.returncode == 1 and "token 999999 not found" in unknown.stderr
    negative = run_cli(database_url, "token", "rotate", newest, "--overlap-seconds", "-5")
    assert negative.returncode == 2 and "negative" in negative.stderr
