from datetime import UTC, datetime, timedelta

from tests.helpers import create_connection, iso, report, start_run


async def test_report_and_read_telemetry(client, tenant):
    cid = await create_connection(client, tenant)
    started = datetime.now(UTC) - timedelta(minutes=10)
    run_id = await start_run(client, tenant, cid, started)
    r = await report(client, tenant, cid, run_id, completed_at=iso(started + timedelta(minutes=5)),
                     events_delivered=100, batches_dlq=0, error=None)
    assert r.status_code == 204, r.text
    r = await client.get(f"{tenant.prefix}/{cid}/telemetry/", headers=tenant.headers("read"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "active"
    assert body["events_last_24h"]["total"] == 100


async def test_graphql_connection_telemetry(client, tenant):
    from tests.helpers import graphql

    cid = await create_connection(client, tenant)
    data = await graphql(client, tenant, """
      query($id: ID!) { connection(id: $id) { id name warehouseType
        telemetry { status statusReason lastDeliveryAt eventsLast24h { total evaluations customEvents }
                    failedDeliveriesLast24h recentErrors { occurredAt message } }
        pipelines { id kind telemetry { status } }
        runs(first: 5) { nodes { id status } pageInfo { hasNextPage endCursor } } } }
    """, id=str(cid))
    assert "errors" not in data, data
    assert data["data"]["connection"]["telemetry"]["status"] == "IDLE"
    data = await graphql(client, tenant, """
      mutation($input: StartRunInput!) { startRun(input: $input) {
        __typename ... on StartRunSuccess { run { id status startedAt pipeline { id } } }
        ... on Error { message } } }
    """, input={"connectionId": str(cid)})
    assert data["data"]["startRun"]["__typename"] == "StartRunSuccess", data
    run_id = data["data"]["startRun"]["run"]["id"]
    data = await graphql(client, tenant, """
      mutation($input: ReportRunInput!) { reportRun(input: $input) {
        __typename ... on ReportRunSuccess { changed run { id status eventsDelivered } }
        ... on Error { message } } }
    """, input={"runId": run_id, "completedAt": iso(datetime.now(UTC)), "eventsDelivered": 5000000000})
    assert data["data"]["reportRun"]["__typename"] == "ReportRunSuccess", data
    assert data["data"]["reportRun"]["run"]["eventsDelivered"] == 5000000000
    data = await graphql(client, None, "{ connections { nodes { id } } }")
    assert data["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", data
