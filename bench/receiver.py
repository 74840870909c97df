"""The webhook receiver of the webhook scenarios: a small Starlette app on 127.0.0.1.

- `POST /hook`: a delivery. Counted per `webhook-id` header (so duplicates show), its signature
  checked when the harness gave the endpoint's secret (the Standard Webhooks scheme, written
  here independently of runwatch: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the
  base64 key after `whsec_`). Answers 204 at once, or after `delay` seconds in slow mode; a
  slow answer is released early (still 204) when the harness switches back to fast, so that
  nothing waits for the rest of a 10 s sleep.
- `POST /control`: `{"delay": seconds, "secret": "whsec_…", "reset": true}` (each optional):
  the answer delay, the secret to verify with, and a reset of the counters.
- `GET /stats` (`?ids=1` adds every `webhook-id` seen): requests, distinct ids, duplicates,
  bad signatures, requests in flight now and at most since the last reset, slow answers.
- `GET /health`: readiness.

Started by the harness as `python -m uvicorn --factory bench.receiver:create_app --host
127.0.0.1 --port P ... --timeout-graceful-shutdown 1` (a stop never waits for sleeping answers).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def signature_ok(secret: str, message_id: str, timestamp: str, body: bytes,
                 header: str) -> bool:
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"))
    except ValueError:
        return False
    expected = base64.b64encode(hmac.new(
        key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()).decode()
    for candidate in header.split():  # several signatures may be sent, space-separated
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


@dataclass
class State:
    delay: float = 0.0
    secret: str | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    ids: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    missing_id: int = 0
    bad_signatures: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    slow_answers: int = 0  # answered after the full delay
    released_early: int = 0  # slow answers cut short by a switch back to fast

    def reset(self) -> None:
        self.ids.clear()
        self.requests = self.missing_id = self.bad_signatures = 0
        self.max_in_flight = self.in_flight
        self.slow_answers = self.released_early = 0

    def stats(self, with_ids: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "requests": self.requests, "distinct": len(self.ids),
            "duplicates": sum(n - 1 for n in self.ids.values()),
            "missing_id": self.missing_id, "bad_signatures": self.bad_signatures,
            "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
            "slow_answers": self.slow_answers, "released_early": self.released_early,
            "delay": self.delay, "verifying": self.secret is not None,
        }
        if with_ids:
            data["ids"] = sorted(self.ids)
        return data


def create_app() -> Starlette:
    state = State()

    async def hook(request: Request) -> Response:
        body = await request.body()
        state.requests += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            message_id = request.headers.get("webhook-id")
            if message_id:
                state.ids[message_id] += 1
            else:
                state.missing_id += 1
            if state.secret is not None and not signature_ok(
                state.secret, message_id or "", request.headers.get("webhook-timestamp", ""),
                body, request.headers.get("webhook-signature", ""),
            ):
                state.bad_signatures += 1
            if state.delay > 0:
                release = state.release
                try:
                    await asyncio.wait_for(release.wait(), state.delay)
                    state.released_early += 1
                except TimeoutError:
                    state.slow_answers += 1
        finally:
            state.in_flight -= 1
        return Response(status_code=204)

    async def control(request: Request) -> Response:
        body = await request.json()
        if "delay" in body:
            delay = float(body["delay"])
            if delay > 0 and state.delay <= 0:
                state.release = asyncio.Event()
            elif delay <= 0:
                state.release.set()  # sleeping answers go out now
            state.delay = max(0.0, delay)
        if "secret" in body:
            state.secret = body["secret"]
        if body.get("reset"):
            state.reset()
        return JSONResponse(state.stats(with_ids=False))

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats(with_ids=request.query_params.get("ids") == "1"))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[
        Route("/hook", hook, methods=["POST"]),
        Route("/control", control, methods=["POST"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ])
