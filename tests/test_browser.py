"""The status UI and the GraphiQL console in a real browser (Playwright driving the
distribution's Chromium, headless), against a real `runwatch serve` seeded through the API.

Every request to another origin is blocked and recorded, and each test asserts there was none:
the UI and the console work with the network unplugged. A failing test saves a screenshot of
the page and names the file in its failure. Without a Chromium the tests FAIL and say how to
install one (never a silent skip). `RUNWATCH_UI_SCREENSHOTS=docs/screenshots` also saves each
screen's screenshot there (the README's pictures).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import conftest

RUNWATCH = [sys.executable, "-m", "runwatch.cli"]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
INSTALL_HINT = (
    "The browser tests need Chromium and found none. Install the distribution's package "
    "(Debian/Ubuntu: `apt-get update && apt-get install -y chromium`; `.ci/run` does this in "
    "CI) or point RUNWATCH_TEST_CHROMIUM at a Chrome/Chromium executable. Do not run "
    "`playwright install`.")
SHOTS = Path(tempfile.gettempdir()) / f"runwatch-ui-shots-{os.getpid()}"
README_SHOTS = os.environ.get("RUNWATCH_UI_SCREENSHOTS")
TIMEOUT_MS = 15_000


def chromium() -> str:
    candidates = [os.environ.get("RUNWATCH_TEST_CHROMIUM"), "/usr/bin/chromium",
                  shutil.which("chromium"), shutil.which("chromium-browser"),
                  shutil.which("google-chrome")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(INSTALL_HINT, pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------ the server


@dataclass
class Server:
    base: str
    token: str
    log: Path
    ids: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(method, self.base + path, json=body, headers=self.headers, timeout=30)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        r = httpx.post(self.base + "/graphql", json={"query": query, "variables": variables},
                       headers=self.headers, timeout=30)
        body = r.json()
        assert r.status_code == 200 and "errors" not in body, body
        return body["data"]


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([*RUNWATCH, *args], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`runwatch serve` on a free port and a database of its own (the suite's database is
    cleaned after every test; this one keeps the seeded organisation for the module)."""
    chromium()  # no browser: fail before starting anything
    tmp = tmp_path_factory.mktemp("ui-server")
    pg_name = None
    if conftest.DIALECT == "postgres":
        pg_name, url = asyncio.run(conftest._create_pg_database())
        url = url.replace("asyncpg://", "postgres://", 1)
    else:
        url = f"sqlite://{tmp / 'ui.db'}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RUNWATCH_"))}
    # The reaper off: seed() writes a week of history through the API, each run started days
    # ago and reported a moment later, and a reaper pass between the two timed a run out (its
    # deadline long past) and made the report a 409.
    env.update(DATABASE_URL=url, RUNWATCH_WEBHOOK_ALLOW_PRIVATE="1",
               RUNWATCH_LIVE_POLL_SECONDS="0.2", RUNWATCH_PORT=str(port),
               RUNWATCH_REAPER_INTERVAL_SECONDS="0")
    cli(env, "migrate")
    org = re.search(r"\d+", cli(env, "org", "create", "ui-demo")).group()
    token = re.search(r"rw_\S+", cli(env, "token", "create", "--org", org, "--scope", "admin",
                                     "--name", "ui")).group()
    empty_org = re.search(r"\d+", cli(env, "org", "create", "ui-empty")).group()
    empty_token = re.search(r"rw_\S+", cli(env, "token", "create", "--org", empty_org,
                                           "--scope", "read", "--name", "ui")).group()
    log = tmp / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*RUNWATCH, "serve", "--port", str(port)], env=env, cwd=tmp,
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        srv = Server(base=base, token=token, log=log,
                     ids={"org": int(org), "empty_token": empty_token})
        seed(srv)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if pg_name:
            asyncio.run(conftest._drop_pg_database(pg_name))


WAREHOUSE = "/api/v1/organisations/{org}/integrations/warehouse-connections"


def day_slots(now: datetime, day: int) -> list[tuple[datetime, timedelta]]:
    """Three (start, duration) pairs on the UTC date `day` days before `now`'s, each run ended
    before `now`. The board's bars count runs by UTC date, so a run seeded "`day` days ago" must
    fall on that date whatever the time of day (an offset from `now` crosses midnight in the
    first hours of a day)."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if day:
        date = midnight - timedelta(days=day)
        return [(date + timedelta(hours=2 + 3 * k), timedelta(minutes=4)) for k in range(3)]
    room = now - midnight - timedelta(minutes=1)  # today: between midnight and a minute ago
    assert room >= timedelta(minutes=1), "seed() waits until two minutes after midnight"
    step = min(room / 3, timedelta(hours=3))
    return [(midnight + step * k, min(step / 2, timedelta(minutes=4))) for k in range(3)]


def seed(s: Server) -> None:
    """An organisation with something on every screen: a failing and a healthy connection
    with a week of runs, an ELT pipeline with a live run, logs and samples, a webhook endpoint
    whose deliveries fail, an alert channel, watcher pipelines with lineage, an anomaly and
    late runs."""
    now = datetime.now(UTC)
    past_midnight = now - now.replace(hour=0, minute=0, second=0, microsecond=0)
    if past_midnight < timedelta(minutes=2):  # today needs room for three finished runs
        time.sleep((timedelta(minutes=2) - past_midnight).total_seconds() + 1)
        now = datetime.now(UTC)
    prefix = WAREHOUSE.format(org=s.ids["org"])
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: deliveries and alerts fail

    s.rest("PUT", "/api/elt/runs/webhook", {"url": f"{dead}/runwatch-events"})
    s.gql("""mutation($i: CreateAlertChannelInput!) { createAlertChannel(input: $i) {
             __typename } }""", i={"name": "on-call", "kind": "slack",
                                   "url": f"{dead}/services/T000/B000/XXXX"})

    healthy = s.rest("POST", prefix + "/", {"name": "events-warehouse", "type": "bigquery"})["id"]
    failing = s.rest("POST", prefix + "/", {"name": "orders-warehouse", "type": "snowflake"})["id"]
    s.ids.update(healthy=healthy, failing=failing)
    for day in range(6, -1, -1):
        slots = day_slots(now, day)
        for hour, (cid, fails) in enumerate([(healthy, False), (failing, day < 2),
                                             (healthy, False)]):
            started, took = slots[hour]
            run = s.rest("POST", f"{prefix}/{cid}/metrics/", {"started_at": iso(started)})
            body = {"completed_at": iso(started + took),
                    "events_delivered": 0 if fails else 12_000 + 750 * day + hour * 40,
                    "evaluations": 0 if fails else 9_000 + 500 * day,
                    "custom_events": 0 if fails else 3_000 + 250 * day + hour * 40}
            if fails:
                body["error"] = "permission denied for schema ANALYTICS (role LOADER)"
            s.rest("PATCH", f"{prefix}/{cid}/metrics/{run['run_id']}/", body)

    # ELT: a finished run (a webhook delivery) and a running one with logs and samples
    pipeline = s.rest("POST", "/api/elt/pipelines", {"name": "nightly-orders-load",
                                                      "description": "orders to the lake"})
    pid = s.ids["elt_pipeline"] = int(pipeline["pipeline"]["id"])
    done = s.gql("""mutation($i: CreateRunInput!) { createRun(input: $i) {
                    ... on RunSuccess { run { id } } } }""",
                 i={"pipelineId": str(pid), "status": "RUNNING"})["createRun"]["run"]["id"]
    update = """mutation($i: UpdateRunInput!) { updateRun(input: $i) { __typename
                ... on Error { message } } }"""
    s.gql(update, i={"id": done, "logEntries": [{"message": "extract orders"},
                                                 {"message": "load done"}],
                     "status": "SUCCEEDED"})
    live = s.gql("""mutation($i: CreateRunInput!) { createRun(input: $i) {
                    ... on RunSuccess { run { id } } } }""",
                 i={"pipelineId": str(pid), "status": "RUNNING",
                    "environment": "production"})["createRun"]["run"]["id"]
    s.ids.update(done_run=done, live_run=live)
    chatty = s.gql("""mutation($i: CreateRunInput!) { createRun(input: $i) {
                      ... on RunSuccess { run { id } } } }""",
                   i={"pipelineId": str(pid), "status": "RUNNING"})["createRun"]["run"]["id"]
    # 500 lines (the per-run cap), then 20 appended: the oldest 20 are dropped
    s.gql(update, i={"id": chatty, "logEntries": [{"message": f"row batch {i}"}
                                                  for i in range(500)]})
    for i in range(500, 520):
        s.gql(update, i={"id": chatty, "appendLog": {"message": f"row batch {i}"}})
    s.ids["chatty_run"] = chatty
    start = now - timedelta(minutes=9)
    samples = [{"at": iso(start + timedelta(minutes=i)), "rows": rows, "bytes": rows * 180,
                "progress": round(i / 12, 2), "phase": "load"}
               for i, rows in enumerate([0, 1200, 5400, 9800, 15300, 19900, 26100, 31800])]
    s.gql(update, i={"id": live, "telemetrySamples": samples,
                     "telemetrySummary": {"rowsLoaded": 31800, "progress": 0.6,
                                          "currentPhase": "load",
                                          "currentResource": "orders_2024"},
                     "logEntries": [
                         {"message": "connected to source", "at": iso(start)},
                         {"message": "extracting orders since watermark 2024-06-01",
                          "at": iso(start + timedelta(minutes=1))},
                         {"message": "slow batch: 4.2 s for 5,000 rows", "level": "WARN",
                          "at": iso(start + timedelta(minutes=5))},
                         {"message": "loading orders_2024", "at": iso(start + timedelta(
                             minutes=7))}]})

    # Watcher: lineage, an anomaly, late runs and a stale target
    def watcher_pipeline(name: str, **fields: Any) -> int:
        return s.rest("POST", "/pipeline", {"name": name, "pipeline_type_name": "dbt-model",
                                            **fields})["id"]

    def start_exec(pipeline: int, at: datetime) -> int:
        return s.rest("POST", "/start_pipeline_execution",
                      {"pipeline_id": pipeline, "start_date": iso(at)})["id"]

    def end_exec(execution: int, at: datetime, ok: bool = True, **fields: Any) -> None:
        s.rest("POST", "/end_pipeline_execution", {"id": execution, "end_date": iso(at),
                                                   "completed_successfully": ok, **fields})

    def address(name: str) -> dict[str, str]:
        return {"name": name, "address_type_name": "postgres_table",
                "address_type_group_name": "database"}

    wp = s.ids["watcher_pipeline"] = watcher_pipeline("orders-daily-model")
    s.rest("POST", "/address_lineage", {
        "pipeline_id": wp,
        "source_addresses": [address("raw.orders"), address("raw.customers")],
        "target_addresses": [address("analytics.orders_daily")]})
    downstream = watcher_pipeline("revenue-report")
    s.rest("POST", "/address_lineage", {
        "pipeline_id": downstream,
        "source_addresses": [address("analytics.orders_daily")],
        "target_addresses": [address("reports.revenue")]})
    # The baseline is the same UTC hour of day: every execution starts in one hour
    # (minutes 5 to 15), whatever the time the test runs.
    base = (now - timedelta(days=6, hours=1)).replace(minute=5, second=0, microsecond=0)
    for day in range(5):
        at = base + timedelta(days=day, minutes=day)
        end_exec(start_exec(wp, at), at + timedelta(seconds=300 + 10 * day),
                 total_rows=10_000 + 100 * day, inserts=1000 + 10 * day)
    s.rest("POST", "/anomaly_detection_rule", {"pipeline_id": wp, "metric_field": "total_rows",
                                               "z_threshold": 2, "minimum_executions": 5})
    at = base + timedelta(days=5, minutes=10)
    anomalous = start_exec(wp, at)
    end_exec(anomalous, at + timedelta(seconds=330), total_rows=92_000, inserts=1040)
    failed = start_exec(wp, now - timedelta(hours=3))
    end_exec(failed, now - timedelta(hours=3) + timedelta(seconds=40), ok=False)
    s.ids["failed_exec"] = failed

    checks = s.ids["checks_pipeline"] = watcher_pipeline(
        "customers-snapshot", timeliness_number=1, timeliness_datepart="minute",
        freshness_number=1, freshness_datepart="minute")
    start_exec(checks, now - timedelta(minutes=10))  # still running past its 1-minute rule
    stale = start_exec(checks, now - timedelta(days=1))
    end_exec(stale, now - timedelta(days=1) + timedelta(seconds=30), inserts=1)
    s.rest("POST", "/timeliness", {"lookback_minutes": 60})
    s.rest("POST", "/freshness")

    # the in-process workers detect the anomaly, run the checks and try the deliveries
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data = s.gql("""{ anomalyResults { nodes { id } } timelinessLogs { nodes { id } }
                          webhookDeliveries { nodes { id attemptCount } } }""")
        if (data["anomalyResults"]["nodes"] and data["timelinessLogs"]["nodes"]
                and all(d["attemptCount"] for d in data["webhookDeliveries"]["nodes"])
                and data["webhookDeliveries"]["nodes"]):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the workers did not catch up: {data}")


# ----------------------------------------------------------------------------- the browser
# Playwright's async API: its sync API runs an event loop of its own in the test's thread,
# which the suite's async fixtures cannot share.


@dataclass
class Browser:
    server: Server
    page: Any
    foreign: list[str]
    errors: list[str]

    async def shot(self, name: str, mask: list[Any] | None = None) -> Path:
        """A screenshot of the whole page; `mask` covers what must not be in a picture that
        may be committed (a token)."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True, mask=mask or [],
                                   mask_color="#dde1ea")
        if README_SHOTS:
            Path(README_SHOTS).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(README_SHOTS) / f"{name}.png")
        return path

    async def sign_in(self, token: str | None = None) -> None:
        await self.page.goto(self.server.base + "/")
        await self.page.fill("#token", token or self.server.token)
        await self.page.click("form.signin button[type=submit]")

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self.server.rest, method, path, body)

    async def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.server.gql, query, **variables)


@pytest.fixture(scope="module")
async def chromium_browser(server: Server) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), headless=True,
                                          args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def ui(server: Server, chromium_browser: Any) -> AsyncIterator[Browser]:
    context = await chromium_browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    foreign: list[str] = []
    errors: list[str] = []

    async def only_our_origin(route: Any) -> None:
        url = route.request.url
        if url.startswith(server.base + "/") or url.startswith("data:"):
            await route.continue_()
        else:
            foreign.append(url)
            await route.abort()

    await context.route("**/*", only_our_origin)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("websocket", lambda ws: None if ws.url.startswith(
        server.base.replace("http", "ws", 1) + "/") else foreign.append(ws.url))
    yield Browser(server=server, page=page, foreign=foreign, errors=errors)
    await context.close()
    assert foreign == [], f"requests that left the server's origin: {foreign}"
    assert errors == [], f"errors in the page: {errors}"


def screenshot_on_failure(test: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(test)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            await test(*args, **kwargs)
        except BaseException as exc:
            ui = kwargs["ui"]
            path = SHOTS / f"FAILED-{test.__name__}.png"
            try:
                SHOTS.mkdir(parents=True, exist_ok=True)
                await ui.page.screenshot(path=str(path), full_page=True)
                exc.add_note(f"screenshot of the page: {path}")
            except Exception as shot_error:  # the page itself may be gone
                exc.add_note(f"no screenshot ({shot_error}); server log: {ui.server.log}")
            raise

    return wrapper


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    playwright_expect.set_options(timeout=TIMEOUT_MS)
    return playwright_expect(target)


# ------------------------------------------------------------------------------ the tests


@screenshot_on_failure
async def test_sign_in_and_see_the_failing_connection_and_its_reason(ui: Browser) -> None:
    page = ui.page
    await ui.sign_in("rw_not_a_real_token")
    await expect(page.locator(".signin .message.error")).to_contain_text("not accepted")
    assert await page.evaluate("sessionStorage.getItem('runwatch.token')") is None

    await ui.sign_in()
    await expect(page.locator("h1")).to_have_text("Board")
    assert await page.evaluate("sessionStorage.getItem('runwatch.token')") == ui.server.token
    assert ui.server.token not in page.url
    data = await ui.gql("query($id: ID!) { connection(id: $id) { telemetry { statusReason } } }",
                        id=str(ui.server.ids["failing"]))
    reason = data["connection"]["telemetry"]["statusReason"]
    row = page.locator(f"#connections tr[data-connection='{ui.server.ids['failing']}']")
    await expect(row.locator(".badge")).to_have_text("error")
    await expect(row.locator(".reason")).to_have_text(reason)
    await expect(row.locator("td.streak")).to_contain_text("failed")
    await expect(row.locator("svg.bars rect.failed")).to_have_count(2)
    healthy = page.locator(f"#connections tr[data-connection='{ui.server.ids['healthy']}']")
    await expect(healthy.locator(".badge")).to_have_text("active")
    await expect(healthy.locator("svg.bars rect.ok")).to_have_count(7)
    await expect(page.locator("#pipelines tr", has_text="orders-daily-model")).to_be_visible()
    await ui.shot("board")

    await page.click("#signout")
    await expect(page.locator("form.signin")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('runwatch.token')") is None


@screenshot_on_failure
async def test_the_pipeline_page_with_runs_anomalies_checks_and_lineage(ui: Browser) -> None:
    page, ids = ui.page, ui.server.ids
    await ui.sign_in()
    await expect(page.locator("h1")).to_have_text("Board")
    await page.click(f"#pipelines tr[data-pipeline='{ids['watcher_pipeline']}'] a")
    await expect(page.locator("h1")).to_contain_text("orders-daily-model")
    await expect(page.locator("#runs tbody tr")).to_have_count(7)
    await page.select_option("#status-filter", "FAILED")
    await expect(page.locator("#runs tbody tr")).to_have_count(1)
    await expect(page.locator(f"#runs tr[data-run='{ids['failed_exec']}']")).to_be_visible()
    await page.select_option("#status-filter", "")
    await expect(page.locator("#runs tbody tr")).to_have_count(7)
    await expect(page.locator("#anomalies tbody tr")).to_have_count(1)
    await expect(page.locator("#anomalies tbody tr")).to_contain_text("total_rows")
    await expect(page.locator("#lineage svg.lineage .node")).to_have_count(4)
    await expect(page.locator("#lineage svg.lineage path.edge.mine")).to_have_count(2)
    await ui.shot("pipeline")

    await page.goto(f"{ui.server.base}/#/pipeline/{ids['checks_pipeline']}")
    await expect(page.locator("h1")).to_contain_text("customers-snapshot")
    await expect(page.locator("#timeliness tbody tr")).to_have_count(1)
    await expect(page.locator("#freshness tbody tr")).to_have_count(1)
    await expect(page.locator("#anomalies .empty")).to_have_text("No anomalies detected.")

    await page.goto(f"{ui.server.base}/#/pipeline/999999")
    await expect(page.locator(".message.error")).to_contain_text("was not found")


@screenshot_on_failure
async def test_the_run_page_shows_a_log_line_the_moment_it_is_appended(ui: Browser) -> None:
    page, ids = ui.page, ui.server.ids
    await ui.sign_in()
    await expect(page.locator("h1")).to_have_text("Board")
    await page.goto(f"{ui.server.base}/#/run/{ids['live_run']}")
    await expect(page.locator("#live")).to_have_text("● live")
    await expect(page.locator("#logs li")).to_have_count(4)
    await expect(page.locator("#samples svg.chart circle.dot")).to_have_count(8)
    await expect(page.locator("#metrics")).to_contain_text("60 % · load · orders_2024")
    await ui.shot("run")

    line = f"loaded batch {time.time_ns()}"
    await ui.api("PATCH", f"/api/elt/runs/{ids['live_run']}",
                 {"appendLog": {"message": line, "level": "warn"},
                  "appendTelemetrySample": {"rows": 40_000, "phase": "load"}})
    await expect(page.locator("#logs li.level-warn", has_text=line)).to_be_visible(
        timeout=10_000)
    await expect(page.locator("#samples svg.chart circle.dot")).to_have_count(9)
    await expect(page.locator("#logs li")).to_have_count(5)  # no line twice

    await ui.api("PATCH", f"/api/elt/runs/{ids['live_run']}", {"status": "succeeded"})
    await expect(page.locator("#live")).to_have_text("finished", timeout=10_000)
    await expect(page.locator("h1 .badge")).to_have_text("succeeded")


@screenshot_on_failure
async def test_the_run_page_says_what_of_the_log_it_does_not_show(ui: Browser) -> None:
    page = ui.page
    await ui.sign_in()
    await expect(page.locator("h1")).to_have_text("Board")
    await page.goto(f"{ui.server.base}/#/run/{ui.server.ids['chatty_run']}")
    await expect(page.locator(".log-notes .message.warn")).to_contain_text(
        "20 earlier log lines were dropped")
    await expect(page.locator(".log-notes .message.info")).to_contain_text(
        "Showing the first 200 lines")
    await expect(page.locator("#logs li")).to_have_count(200)
    await expect(page.locator("#logs li .msg").first).to_have_text("row batch 20")


@screenshot_on_failure
async def test_an_empty_organisation_gets_empty_states(ui: Browser) -> None:
    page = ui.page
    await ui.sign_in(ui.server.ids["empty_token"])
    await expect(page.locator("h1")).to_have_text("Board")
    await expect(page.locator("#connections .empty")).to_contain_text("No connections yet")
    await expect(page.locator("#pipelines .empty")).to_have_text("No pipelines yet.")
    # Each screen's heading first: until the click's navigation has run, `main .empty` is
    # still the board's two, and a locator that resolves to two fails at once (strict mode).
    await page.click("nav a[data-screen=webhooks]")
    await expect(page.locator("h1")).to_have_text("Webhooks")
    await expect(page.locator("main .empty")).to_contain_text("No webhook endpoints")
    await page.click("nav a[data-screen=alerts]")
    await expect(page.locator("h1")).to_have_text("Alert channels")
    await expect(page.locator("main .empty")).to_contain_text("No alert channels")
    await page.goto(f"{ui.server.base}/#/run/{ui.server.ids['live_run']}")  # another org's
    await expect(page.locator(".message.error")).to_contain_text("was not found")
    await page.goto(f"{ui.server.base}/#/nowhere")
    await expect(page.locator(".message.error")).to_contain_text("There is no such page")


@screenshot_on_failure
async def test_a_screen_still_loading_does_not_draw_over_the_next_one(ui: Browser) -> None:
    """A person who moves on while a screen's query is slow stays on the screen they went
    to: the board's answer, held back until the webhooks page is shown, arrives and is
    dropped (before, the board drew over the webhooks page)."""
    page = ui.page
    await ui.sign_in()
    await expect(page.locator("h1")).to_have_text("Board")
    await page.click("nav a[data-screen=webhooks]")
    await expect(page.locator("h1")).to_have_text("Webhooks")

    release = asyncio.Event()
    held: list[Any] = []

    async def hold_the_board(route: Any) -> None:
        if "query Board" in (route.request.post_data or ""):
            held.append(route.request)
            await release.wait()
        await route.fallback()  # on to the origin guard

    await page.route("**/graphql", hold_the_board)
    try:
        await page.click("nav a[data-screen=board]")
        await expect(page.locator("main .loading")).to_be_visible()
        await page.click("nav a[data-screen=webhooks]")
        await expect(page.locator("h1")).to_have_text("Webhooks")
        assert len(held) == 1
        release.set()
        answer = await held[0].response()
        assert answer is not None and answer.ok
        await answer.finished()
        # The board's code runs once its answer is read: give it two turns of the page's
        # event loop, then the page must still be the webhooks page.
        await page.evaluate("() => new Promise((done) => setTimeout(() => setTimeout(done)))")
        await expect(page.locator("h1")).to_have_text("Webhooks")
        await expect(page.locator("nav a.current")).to_have_text("Webhooks")
    finally:
        release.set()
        await page.unroute("**/graphql", hold_the_board)


@screenshot_on_failure
async def test_redeliver_a_failed_webhook(ui: Browser) -> None:
    page = ui.page
    query = "{ webhookDeliveries { nodes { id eventType attemptCount } } }"
    latest = (await ui.gql(query))["webhookDeliveries"]["nodes"][:10]  # what the screen shows
    delivery = next(d for d in latest if d["eventType"] == "run.succeeded")
    await ui.sign_in()
    await expect(page.locator("h1")).to_have_text("Board")
    await page.click("nav a[data-screen=webhooks]")
    await expect(page.locator("h1")).to_have_text("Webhooks")
    row = page.locator(f"tr[data-delivery='{delivery['id']}']")
    await expect(row).to_contain_text("run.succeeded")
    await ui.shot("webhooks")
    await row.locator("button.redeliver").click()
    await expect(row.locator(".message.ok")).to_have_text("Queued for redelivery.")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        after = next(d for d in (await ui.gql(query))["webhookDeliveries"]["nodes"]
                     if d["id"] == delivery["id"])
        if after["attemptCount"] > delivery["attemptCount"]:
            break
        await asyncio.sleep(0.3)
    assert after["attemptCount"] > delivery["attemptCount"], (delivery, after)

    await page.click("nav a[data-screen=alerts]")
    await expect(page.locator("h1")).to_have_text("Alert channels")
    await expect(page.locator("tbody tr")).to_contain_text("on-call")
    # the incoming-webhook URL is a secret: only its host is shown
    await expect(page.locator("tbody tr")).not_to_contain_text("XXXX")


@screenshot_on_failure
async def test_the_console_runs_a_query_with_the_signed_in_token(ui: Browser) -> None:
    page = ui.page
    await ui.sign_in()
    await expect(page.locator("h1")).to_have_text("Board")
    await page.goto(ui.server.base + "/graphql")
    await expect(page.locator(".graphiql-execute-button")).to_be_visible()
    await page.click(".graphiql-execute-button")
    await expect(page.locator(".result-window")).to_contain_text("orders-warehouse")
    headers = page.locator(".graphiql-editor-tool .graphiql-editor:visible")
    await expect(headers).to_contain_text("Bearer")  # prefilled from the signed-in tab
    await ui.shot("console", mask=[headers])
    assert ui.server.token not in page.url
    stored = await page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert ui.server.token not in stored, "the token must not be persisted in localStorage"


def test_a_missing_browser_fails_with_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setenv("RUNWATCH_TEST_CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        chromium()
