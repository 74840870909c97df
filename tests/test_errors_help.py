"""Errors that say what to do (issue 12): an invalid token is not a missing one, a token sent
without `Bearer ` gets a hint, a mistyped path is not an unknown id, GraphQL's unreadable
requests answer in GraphQL's error shape, and REST and GraphQL agree where a person compares
them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests import helpers

QUERY = {"query": "{ connections { nodes { id } } }"}


async def test_graphql_tells_a_missing_token_from_an_invalid_one(client, tenant):
    answers = {}
    for case, headers in {
        "none": {},
        "invalid": {"Authorization": "Bearer rw_000000000000_nope"},
        "revoked-looking": {"Authorization": "Bearer not-a-runwatch-token"},
        "no bearer": {"Authorization": tenant.tokens["read"]},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    }.items():
        r = await client.post("/graphql", json=QUERY, headers=headers)
        assert r.status_code == 200, r.text
        (error,) = r.json()["errors"]
        assert error["extensions"]["code"] == "UNAUTHENTICATED", error
        answers[case] = error["message"]
    assert answers["none"].startswith("Authentication required: send 'Authorization: Bearer")
    assert answers["invalid"].startswith("Invalid token: it is unknown, revoked or expired")
    assert answers["revoked-looking"] == answers["invalid"]
    assert answers["no bearer"] == "Invalid token. Send it as 'Authorization: Bearer <token>'."
    assert answers["basic"] == answers["no bearer"]
    assert len({answers["none"], answers["invalid"], answers["no bearer"]}) == 3
    # and with the token sent properly, it works
    r = await client.post("/graphql", json=QUERY,
                          headers={"Authorization": f"Bearer {tenant.tokens['read']}"})
    assert r.json()["data"] == {"connections": {"nodes": []}}


async def test_rest_hints_at_bearer_in_each_contracts_shape(client, tenant):
    bare = {"Authorization": tenant.tokens["admin"]}
    hint = "Invalid token. Send it as 'Authorization: Bearer <token>'."
    r = await client.get(tenant.prefix + "/", headers=bare)
    assert (r.status_code, r.json()) == (401, {"detail": hint})
    r = await client.get("/api/elt/runs", headers=bare)
    assert (r.status_code, r.json()) == (401, {"error": hint})
    r = await client.get("/pipeline", headers=bare)  # the Watcher words its 401s in lower case
    assert (r.status_code, r.json()) == (401, {"detail": hint.lower()})
    # an unknown token keeps the contracts' own words
    r = await client.get(tenant.prefix + "/", headers={"Authorization": "Bearer rw_0_x"})
    assert (r.status_code, r.json()) == (401, {"detail": "Invalid token."})


async def test_a_mistyped_path_is_not_an_unknown_id(client, tenant):
    headers = tenant.headers("admin")
    unknown_id = await client.get(f"{tenant.prefix}/999999/", headers=headers)
    assert (unknown_id.status_code, unknown_id.json()) == (404, {"detail": "Not found."})
    typo = await client.get(f"{tenant.prefix}/999999/telemetri/", headers=headers)
    assert typo.status_code == 404
    assert typo.json() == {"detail": f"No such route: GET {tenant.prefix}/999999/telemetri/. "
                           "The REST routes are listed at /openapi.json; GraphQL is at "
                           "/graphql."}
    elt_unknown = await client.get("/api/elt/runs/999999", headers=headers)
    assert (elt_unknown.status_code, elt_unknown.json()) == (404, {"error": "Run not found"})
    elt_typo = await client.get("/api/elt/rnus", headers=headers)
    assert elt_typo.status_code == 404 and list(elt_typo.json()) == ["error"]
    assert elt_typo.json()["error"].startswith("No such route: GET /api/elt/rnus.")
    anywhere = await client.get("/grapql")
    assert anywhere.status_code == 404
    assert anywhere.json()["detail"].startswith("No such route: GET /grapql.")


async def test_unreadable_graphql_requests_answer_in_graphqls_error_shape(client, tenant):
    headers = {**tenant.headers("read"), "Content-Type": "application/json"}
    r = await client.post("/graphql", content=b'{"query": "{ connections { nodes { id',
                          headers=headers)
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    (error,) = r.json()["errors"]
    assert error["extensions"] == {"code": "BAD_REQUEST"}
    assert error["message"].startswith("The request body is not valid JSON: send a JSON object")
    r = await client.post("/graphql", json={"variables": {}}, headers=headers)
    assert r.status_code == 400
    assert r.json()["errors"][0]["message"].startswith("No GraphQL query in the request")
    r = await client.put("/graphql", json=QUERY, headers=headers)
    assert r.status_code == 405 and list(r.json()) == ["detail"]  # the router's, not GraphQL's


async def test_rest_and_graphql_agree_on_times_and_error_run_ids(client, tenant):
    """The same recent error over both surfaces: the same time text (`Z`), the same run id."""
    cid = await helpers.create_connection(client, tenant)
    now = datetime.now(UTC).replace(microsecond=0)
    ok = await helpers.start_run(client, tenant, cid, now - timedelta(minutes=20))
    r = await helpers.report(client, tenant, cid, ok, completed_at=helpers.iso(
        now - timedelta(minutes=15)), events_delivered=10)
    assert r.status_code == 204, r.text
    run = await helpers.start_run(client, tenant, cid, now - timedelta(minutes=9))
    r = await helpers.report(client, tenant, cid, run, completed_at=helpers.iso(
        now - timedelta(minutes=5)), events_delivered=0, error="disk full")
    assert r.status_code == 204, r.text

    rest = (await client.get(f"{tenant.prefix}/{cid}/telemetry/",
                             headers=tenant.headers("read"))).json()
    gql = await helpers.graphql(client, tenant, """query($id: ID!) { connection(id: $id) {
        createdAt telemetry { status statusReason lastDeliveryAt
        recentErrors { occurredAt message runId } } } }""", "read", id=str(cid))
    telemetry = gql["data"]["connection"]["telemetry"]
    (rest_error,) = rest["recent_errors"]
    (gql_error,) = telemetry["recentErrors"]
    assert rest_error == {"occurred_at": helpers.iso(now - timedelta(minutes=5)),
                          "message": "disk full", "run_id": run}
    assert (gql_error["occurredAt"], gql_error["message"], gql_error["runId"]) == (
        rest_error["occurred_at"], "disk full", str(run))
    assert gql["data"]["connection"]["createdAt"].endswith("Z")
    rest_connection = (await client.get(f"{tenant.prefix}/{cid}/",
                                        headers=tenant.headers("read"))).json()
    assert rest_connection["created_at"] == gql["data"]["connection"]["createdAt"]
    # one failure in a row: "the latest run failed", not "the latest 1 run failed"
    assert telemetry["statusReason"] == ("1 failed run and 1 successful run in the last 24 "
                                         "hours; the latest run failed (latest: disk full)")
