"""A page per parent, read for a whole list at once (`runwatch.resolvers.batch_reads`), answers
exactly what the same page asked for one parent at a time answers: `Pipeline.runs`,
`Connection.runs`, `Run.logEntries`, `Run.telemetrySamples`, `Run.webhookDeliveries` and
`WebhookEndpoint.deliveries` against the root fields that take the parent as a filter (or the
parent's own field asked alone), for several `first`, `after` and filters."""

from __future__ import annotations

from datetime import UTC, datetime

from runwatch.models import (
    Connection,
    DeliveryStatus,
    LogLevel,
    Pipeline,
    Run,
    RunLogLine,
    RunStatus,
    RunTelemetrySample,
    WebhookDelivery,
    WebhookEndpoint,
)
from runwatch.resolvers import run_reads, webhooks
from runwatch.resolvers.pagination import encode_cursor
from tests.conftest import Tenant
from tests.helpers import graphql

STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.RUNNING)
PAGE = "nodes { id } pageInfo { hasNextPage endCursor }"
INFO = "pageInfo { hasNextPage endCursor }"
PAGE_OF = {"logEntries": f"nodes {{ seq message }} {INFO}",
           "telemetrySamples": f"nodes {{ seq rows }} {INFO}", "webhookDeliveries": PAGE}


async def seed(tenant: Tenant) -> dict[str, list[int]]:
    """Two connections, five pipelines with 0..6 runs of mixed statuses; the runs of two
    pipelines with log lines, samples and deliveries; an endpoint per pipeline."""
    org, now = tenant.org_id, datetime.now(UTC)
    connections = [await Connection.create(organisation_id=org, name=f"c{i}",
                                           warehouse_type="snowflake") for i in range(2)]
    ids: dict[str, list[int]] = {"pipelines": [], "runs": [], "endpoints": []}
    for p in range(5):
        pipeline = await Pipeline.create(organisation_id=org, name=f"p{p}", kind="batch",
                                         connection=connections[p % 2])
        endpoint = await WebhookEndpoint.create(organisation_id=org, pipeline=pipeline,
                                                url=f"http://127.0.0.1:9/{p}", secret="whsec_x")
        ids["pipelines"].append(pipeline.id)
        ids["endpoints"].append(endpoint.id)
        for r in range(p + 2 if p else 0):
            run = await Run.create(organisation_id=org, pipeline=pipeline,
                                   status=STATUSES[(p + r) % 3], started_at=now)
            ids["runs"].append(run.id)
            for k in range(r % 4):
                await RunLogLine.create(run=run, seq=k + 1, at=now, level=LogLevel.INFO,
                                        message=f"line {k}")
                await RunTelemetrySample.create(run=run, seq=k + 1, at=now, rows=k)
                await WebhookDelivery.create(
                    organisation_id=org, endpoint=endpoint, run=run, event_type="run.succeeded",
                    message_id=f"m-{run.id}-{k}", payload={},
                    status="failed" if k % 2 else "pending")
    ids["connections"] = [c.id for c in connections]
    return ids


async def ask(client, tenant: Tenant, query: str) -> dict:
    body = await graphql(client, tenant, query, "read")
    assert "errors" not in body, body
    return body["data"]


async def test_pages_per_parent_answer_what_one_parent_alone_answers(client, tenant):
    ids = await seed(tenant)
    some_run = encode_cursor(sorted(ids["runs"])[len(ids["runs"]) // 2])
    for window in ("", "(first: 1)", "(first: 2)", f'(first: 2, after: "{some_run}")',
                   "(first: 3, status: [FAILED, RUNNING])"):
        listed = await ask(client, tenant, f"{{ pipelines {{ nodes {{ id runs{window} "
                                           f"{{ {PAGE} }} }} }} }}")
        for node in listed["pipelines"]["nodes"]:
            args = window.strip("()")
            alone = await ask(client, tenant, f'{{ runs(pipelineId: "{node["id"]}"'
                                              f'{", " + args if args else ""}) {{ {PAGE} }} }}')
            assert node["runs"] == alone["runs"], (window, node["id"])
        listed = await ask(client, tenant, f"{{ connections {{ nodes {{ id runs{window} "
                                           f"{{ {PAGE} }} }} }} }}")
        for node in listed["connections"]["nodes"]:
            args = window.strip("()")
            alone = await ask(client, tenant, f'{{ runs(connectionId: "{node["id"]}"'
                                              f'{", " + args if args else ""}) {{ {PAGE} }} }}')
            assert node["runs"] == alone["runs"], (window, node["id"])
            assert node["runs"]["nodes"], "the world gives every connection runs"


def _window(first: int | None, after: str | None, status: str | None = None) -> str:
    args = [f"first: {first}"] * (first is not None) + [f'after: "{after}"'] * (after is not None)
    args += [f"status: {status}"] * (status is not None)
    return f"({', '.join(args)})" if args else ""


def _same(answer: dict, page, key: str = "id") -> None:
    assert [str(n[key]) for n in answer["nodes"]] == [
        str(getattr(item, key)) for item in page.items]
    assert answer["pageInfo"] == {"hasNextPage": page.has_next_page,
                                  "endCursor": page.end_cursor}


async def test_run_and_endpoint_pages_answer_what_the_single_reads_answer(client, tenant, caller):
    """Against `run_reads.log_page` / `sample_page` and `webhooks.list_deliveries`: the reads
    the fields made, one parent at a time, before they were batched."""
    ids = await seed(tenant)
    lines = await RunLogLine.filter(run__organisation_id=tenant.org_id).order_by("id")
    middle = encode_cursor(lines[len(lines) // 2].id)
    for first, after in ((None, None), (1, None), (2, None), (1, middle), (2, middle)):
        window = _window(first, after)
        listed = await ask(client, tenant, f"{{ runs(first: 100) {{ nodes {{ id "
                                           f"logEntries{window} {{ {PAGE_OF['logEntries']} }} "
                                           f"telemetrySamples{window} "
                                           f"{{ {PAGE_OF['telemetrySamples']} }} "
                                           f"webhookDeliveries{window} {{ {PAGE} }} }} }} }}")
        nodes = listed["runs"]["nodes"]
        assert len(nodes) == len(ids["runs"])
        for node in nodes:
            run_id = int(node["id"])
            _same(node["logEntries"], await run_reads.log_page(
                caller=caller, run_id=run_id, first=first, after=after), "seq")
            _same(node["telemetrySamples"], await run_reads.sample_page(
                caller=caller, run_id=run_id, first=first, after=after), "seq")
            _same(node["webhookDeliveries"], await webhooks.list_deliveries(
                caller=caller, where=webhooks.DeliveryFilter(run_id=run_id), first=first,
                after=after))
        if first == 1 and after is None:
            assert any(n["logEntries"]["pageInfo"]["hasNextPage"] for n in nodes)
    for first, status in ((None, None), (1, None), (None, "FAILED"), (1, "PENDING")):
        window = _window(first, None, status)
        listed = await ask(client, tenant, f"{{ webhookEndpoints {{ nodes {{ id "
                                           f"deliveries{window} {{ {PAGE} }} }} }} }}")
        for node in listed["webhookEndpoints"]["nodes"]:
            _same(node["deliveries"], await webhooks.list_deliveries(
                caller=caller, first=first, where=webhooks.DeliveryFilter(
                    endpoint_id=int(node["id"]),
                    status=None if status is None else DeliveryStatus(status.lower()))))


async def test_a_bad_window_is_the_same_error_in_a_list(client, tenant):
    await seed(tenant)
    for window in ("(first: 0)", '(after: "not-a-cursor")'):
        listed = await graphql(client, tenant,
                               f"{{ pipelines {{ nodes {{ runs{window} {{ {PAGE} }} }} }} }}",
                               "read")
        alone = await graphql(client, tenant, f"{{ runs{window} {{ {PAGE} }} }}", "read")
        assert listed["errors"] and alone["errors"], (listed, alone)
        assert {e["message"] for e in listed["errors"]} == {
            e["message"] for e in alone["errors"]}
        assert {e["extensions"]["code"] for e in listed["errors"]} == {
            e["extensions"]["code"] for e in alone["errors"]}
