"""Settings come from the environment only; tokens are hashed, prefixed and cached briefly."""

import pytest

from runwatch.auth import Authenticator, bearer_token
from runwatch.models import ServiceToken
from runwatch.resolvers.tokens import create_token, revoke_token
from runwatch.settings import Settings, SettingsError, normalise_database_url


def test_defaults_are_the_embedded_sqlite_file():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite://runwatch.db?busy_timeout=10000"
    assert settings.is_sqlite and settings.workers_in_serve and settings.graphiql
    assert settings.orphan_window_seconds == 7200


@pytest.mark.parametrize("url", [
    "postgres://u@h:5432/db", "postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db",
])
def test_postgres_spellings_become_asyncpg(url):
    assert normalise_database_url(url) == "asyncpg://u@h:5432/db"


def test_sqlite_keeps_an_explicit_busy_timeout():
    assert normalise_database_url("sqlite:///tmp/x.db?busy_timeout=5") == (
        "sqlite:///tmp/x.db?busy_timeout=5"
    )


@pytest.mark.parametrize("env, name", [
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
    ({"RUNWATCH_PORT": "eighty"}, "RUNWATCH_PORT"),
    ({"RUNWATCH_ORPHAN_WINDOW_SECONDS": "5"}, "RUNWATCH_ORPHAN_WINDOW_SECONDS"),
    ({"RUNWATCH_GRAPHIQL": "maybe"}, "RUNWATCH_GRAPHIQL"),
])
def test_bad_settings_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_bearer_token_parsing():
    assert bearer_token([(b"authorization", b"Bearer rw_a_b")]) == "rw_a_b"
    assert bearer_token([(b"authorization", b"Token rw_a_b")]) == "rw_a_b"
    assert bearer_token([(b"authorization", b"Basic xyz")]) == ""
    assert bearer_token([]) is None


async def test_tokens_are_stored_hashed_with_a_prefix(tenant):
    issued = await create_token(organisation_id=tenant.org_id, scopes="read")
    assert issued.token.startswith("rw_")
    row = await ServiceToken.get(id=issued.id)
    secret = issued.token.split("_", 2)[2]
    assert secret not in row.secret_hash and len(row.secret_hash) == 64


async def test_token_cache_keeps_a_caller_for_its_ttl_only(tenant):
    issued = await create_token(organisation_id=tenant.org_id, scopes="read")
    cached, uncached = Authenticator(ttl=60), Authenticator(ttl=0)
    assert (await cached(issued.token)).organisation_id == tenant.org_id
    await revoke_token(token_id=issued.id)
    assert await uncached(issued.token) is None
    # Within the TTL a replica may still accept it: documented as RUNWATCH_TOKEN_CACHE_SECONDS.
    assert await cached(issued.token) is not None
    assert await Authenticator(ttl=60)(issued.token) is None


async def test_unknown_tokens_are_not_cached(tenant):
    auth = Authenticator(ttl=60)
    for i in range(5):
        assert await auth(f"rw_{i:012x}_nope") is None
    assert auth._cache == {}
