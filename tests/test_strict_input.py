"""Strict JSON at every entrance (issue 10, finding 3): NaN, Infinity, numbers that overflow to
infinity, lone surrogates and deep nesting are refused in each contract's own 400/422 shape
before anything is stored, and nothing half-written survives the refusal. GraphQL `JSON`
scalars reach the same domain rule. Rows stored before the rule are repaired by a migration."""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tortoise import connections

from runwatch.models import Connection, Gateway, Pipeline
from runwatch.resolvers import strict_json
from runwatch.resolvers.connections import create_connection, update_connection
from runwatch.resolvers.errors import InvalidInput
from tests.conftest import Tenant
from tests.elt_helpers import AGENT, ELT, make_gateway
from tests.helpers import graphql

# Bodies that Python's json module accepts but strict JSON refuses. `{}` is filled in with the
# offending value inside a field the route stores as JSON.
NOT_STRICT = {
    "nan": "NaN",
    "infinity": "Infinity",
    "minus_infinity": "-Infinity",
    "overflow": "1e999",
    "lone_surrogate": '"\\ud800"',
    "deep": "[" * 5000 + "]" * 5000,
    "deep_objects": '{"a":' * 5000 + "1" + "}" * 5000,
}
JSON_HEADERS = {"Content-Type": "application/json"}


async def post_raw(client: httpx.AsyncClient, url: str, body: str,
                   headers: dict[str, str]) -> httpx.Response:
    return await client.post(url, content=body.encode(), headers={**headers, **JSON_HEADERS})


@pytest.mark.parametrize("case", NOT_STRICT)
async def test_warehouse_refuses_before_storing(client, tenant: Tenant, case: str):
    before = (await Connection.all().count(), await Pipeline.all().count())
    r = await post_raw(client, tenant.prefix + "/",
                       f'{{"name":"n","type":"pg","k":{NOT_STRICT[case]}}}',
                       tenant.headers("write"))
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"detail"} and r.json()["detail"].startswith("JSON parse error")
    assert (await Connection.all().count(), await Pipeline.all().count()) == before
    listing = await client.get(tenant.prefix + "/", headers=tenant.headers("read"))
    assert listing.status_code == 200, listing.text


@pytest.mark.parametrize("case", NOT_STRICT)
async def test_heartbeat_refuses_and_manifest_keeps_working(client, tenant: Tenant, case: str):
    agent = await make_gateway(tenant)
    r = await post_raw(client, f"{AGENT}/heartbeat", f'{{"labels":{{"k":{NOT_STRICT[case]}}}}}',
                       agent.headers())
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and r.json()["error"].startswith("Invalid JSON")
    assert (await Gateway.get(id=agent.id)).labels == {}
    manifest = await client.get(f"{AGENT}/manifest", headers=agent.headers())
    assert manifest.status_code == 200, manifest.text


@pytest.mark.parametrize("case", NOT_STRICT)
async def test_elt_refuses_before_storing(client, tenant: Tenant, case: str):
    before = await Pipeline.all().count()
    r = await post_raw(client, f"{ELT}/pipelines",
                       f'{{"name":"x","description":{NOT_STRICT[case]}}}', tenant.headers("write"))
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"}
    assert await Pipeline.all().count() == before


@pytest.mark.parametrize("case", NOT_STRICT)
async def test_watcher_refuses_before_storing(client, tenant: Tenant, case: str):
    before = await Pipeline.all().count()
    r = await post_raw(client, "/pipeline",
                       '{"name":"p","pipeline_type_name":"t","pipeline_type_group_name":"g",'
                       f'"pipeline_metadata":{{"k":{NOT_STRICT[case]}}}}}',
                       tenant.headers("write"))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["type"] == "json_invalid" and detail[0]["loc"] == ["body", 0], detail
    assert await Pipeline.all().count() == before


async def test_a_strict_body_is_still_accepted(client, tenant: Tenant):
    r = await post_raw(client, tenant.prefix + "/",
                       '{"name":"n","type":"pg","k":1.5e300,"s":"\\ud83d\\ude00",'
                       f'"deep":{"[" * 60 + "]" * 60}}}', tenant.headers("write"))
    assert r.status_code == 201, r.text


CREATE = """mutation($input: CreateConnectionInput!) { createConnection(input: $input) {
  __typename ... on InvalidInputError { fieldErrors { field messages } } } }"""
UPDATE = """mutation($input: UpdateConnectionInput!) { updateConnection(input: $input) {
  __typename ... on InvalidInputError { fieldErrors { field messages } } } }"""


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_graphql_json_scalars_cannot_store_nan(client, tenant: Tenant, cid: int,
                                                     constant: str):
    """GraphQL bodies are strict JSON as well: NaN in a JSON scalar's variable is a 400."""
    before = await Connection.all().count()
    body = ('{"query":' + json.dumps(CREATE) + ',"variables":{"input":{"name":"g",'
            f'"warehouseType":"pg","settings":{{"k":{constant}}}}}}}}}')
    r = await client.post("/graphql", content=body.encode(),
                          headers={**tenant.headers(), **JSON_HEADERS})
    assert r.status_code == 400, r.text  # the body is not strict JSON
    assert await Connection.all().count() == before
    body = ('{"query":' + json.dumps(UPDATE) + f',"variables":{{"input":{{"id":"{cid}",'
            f'"settings":{{"k":[1,{constant}]}}}}}}}}')
    r = await client.post("/graphql", content=body.encode(),
                          headers={**tenant.headers(), **JSON_HEADERS})
    assert r.status_code == 400, r.text
    assert (await Connection.get(id=cid)).settings == {}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1, -float("inf")], "\ud800"])
async def test_the_resolvers_refuse_values_parsed_elsewhere(caller, cid: int, value):
    """Whatever parsed the value (a GraphQL JSON scalar over a WebSocket, a worker), the
    domain refuses what strict JSON refuses."""
    before = await Connection.all().count()
    with pytest.raises(InvalidInput) as err:
        await create_connection(caller=caller, name="d", warehouse_type="pg",
                                settings={"k": value})
    assert "settings" in err.value.fields
    with pytest.raises(InvalidInput):
        await update_connection(caller=caller, connection_id=cid, settings_patch={"k": value})
    assert await Connection.all().count() == before
    assert (await Connection.get(id=cid)).settings == {}


async def test_graphql_literal_settings_reach_the_same_rule(client, tenant: Tenant):
    """A deep JSON literal in the query text: the domain's depth bound, not a RecursionError."""
    deep = "[" * 110 + "]" * 110
    data = await graphql(client, tenant, """mutation { createConnection(input: {name: "g",
      warehouseType: "pg", settings: {k: DEEP}}) { __typename } }""".replace("DEEP", deep))
    assert data.get("data", {}) is None or data["data"]["createConnection"]["__typename"] \
        == "InvalidInputError", data
    assert await Connection.all().count() == 0


def test_the_rule_itself():
    for value in (float("nan"), float("inf"), -float("inf"), {"a": [float("nan")]}, "\ud800",
                  {"\udc00": 1}, json.loads("[" * 110 + "]" * 110), {1: "x"},
                  b"bytes"):
        assert strict_json.problem(value) is not None, value
    for value in (None, True, 1, 1.5, "😀", {"a": [1, {"b": None}]}, [[]] * 100):
        assert strict_json.problem(value) is None, value
    for text in NOT_STRICT.values():
        with pytest.raises(strict_json.NotStrictJSON):
            strict_json.loads(text)


# Characters JSON writes as they are, lone surrogates (hypothesis draws them rarely on its own)
# and a few it escapes (`\u0000`), each often enough to meet the others.
CHARACTERS = (st.characters(exclude_categories=("Cc", "Cs"))
              | st.sampled_from("\ud800\udbff\udc00\udfff") | st.sampled_from("\x00\n\x7f"))


def texts(max_size: int) -> st.SearchStrategy[str]:
    """Strings of `CHARACTERS` (`st.text` leaves lone surrogates out whatever its alphabet)."""
    return st.lists(CHARACTERS, max_size=max_size).map("".join)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | texts(6),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(texts(4), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(value=JSON_VALUES, ascii_only=st.booleans(),
       encoding=st.sampled_from(["str", "utf-8", "utf-16", "utf-16-le", "utf-32"]))
def test_loads_refuses_a_body_exactly_when_its_value_breaks_the_rule(
        value: object, ascii_only: bool, encoding: str) -> None:
    # `loads` skips the surrogate check for bodies that cannot hold one (`_may_hold_surrogates`):
    # whatever the encoding and escaping, it refuses what `problem` refuses, no more, no less.
    text = json.dumps(value, ensure_ascii=ascii_only)
    raw = text if encoding == "str" else text.encode(encoding, "surrogatepass")
    expected = strict_json.problem(json.loads(raw))  # what the text holds once decoded
    try:
        strict_json.loads(raw)
    except strict_json.NotStrictJSON as exc:
        assert expected is not None, (raw, exc.reason)
    else:
        assert expected is None, raw


def _stdlib_or_error(raw: object) -> tuple[str, object]:
    try:
        return "value", json.loads(raw, parse_constant=strict_json._constant,  # type: ignore[arg-type]
                                   parse_float=strict_json.finite_float)
    except Exception as exc:
        return type(exc).__name__, str(exc)


def _ours_or_error(raw: object) -> tuple[str, object]:
    try:
        return "value", strict_json._decode(raw)  # type: ignore[arg-type]
    except Exception as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=40) | texts(20)
       | JSON_VALUES.map(json.dumps).flatmap(lambda text: st.sampled_from(
           [text, "\ufeff" + text, text.encode(), text.encode("utf-16"),
            text.encode("utf-32-be", "surrogatepass"), "\ufeff".encode() + text.encode(),
            bytearray(text.encode())])))
def test_the_shared_decoder_reads_as_json_loads(raw: object) -> None:
    # `loads` reads through one decoder built once: whatever it is given (any bytes, any
    # encoding, a byte order mark), the value or the error `json.loads` with the same hooks
    # gives.
    assert _ours_or_error(raw) == _stdlib_or_error(raw)


def test_the_shared_decoder_refuses_what_is_not_text_as_json_loads():
    for raw in (None, 1, ["[]"], memoryview(b"[]")):
        assert _ours_or_error(raw) == _stdlib_or_error(raw), raw


async def test_migration_repairs_stored_nan(tenant: Tenant, cid: int):
    """Rows stored before the rule (only SQLite could store them) get null for each
    non-finite number; strings that merely contain the word stay as they were."""
    conn = connections.get("default")
    migration = importlib.import_module("runwatch.models.migrations.0006_repair_nonfinite")
    if conn.capabilities.dialect == "sqlite":
        await conn.execute_query(
            "UPDATE connection SET settings = ? WHERE id = ?",
            ['{"k": NaN, "l": [Infinity, -Infinity, 1], "s": "NaN stays"}', cid])
    await migration.repair_nonfinite(None, SimpleNamespace(client=conn))
    row = await Connection.get(id=cid)
    if conn.capabilities.dialect == "sqlite":
        assert row.settings == {"k": None, "l": [None, None, 1], "s": "NaN stays"}
    else:
        assert row.settings == {}


@pytest.mark.parametrize("case", NOT_STRICT)
@pytest.mark.parametrize("token", [True, False])
async def test_graphql_body_is_strict_json_too(client, tenant: Tenant, case: str, token: bool):
    """The 5,000-deep array posted to /graphql without a token was a RecursionError 500."""
    body = '{"query":"{ __typename }","variables":{"v":' + NOT_STRICT[case] + "}}"
    r = await client.post("/graphql", content=body.encode(),
                          headers={**(tenant.headers() if token else {}), **JSON_HEADERS})
    assert r.status_code == 400, r.text
    r = await client.post("/graphql", content=NOT_STRICT[case].encode(), headers=JSON_HEADERS)
    assert r.status_code == 400, r.text


async def test_a_nul_in_a_looked_up_name_is_not_found(client, tenant):
    """Found by the slow fuzzing tier on PostgreSQL: a name with NUL in a GraphQL lookup
    reached the database ("invalid byte sequence") and was masked as an unexpected error."""
    r = await client.post("/graphql", headers=tenant.headers("read"), json={
        "query": 'query($n: String!) { address(name: $n, namespace: $n) { id } }',
        "variables": {"n": "orders\u0000"}})
    body = r.json()
    assert (r.status_code, body["data"], body.get("errors")) == (200, {"address": None}, None)
