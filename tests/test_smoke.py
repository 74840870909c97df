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
