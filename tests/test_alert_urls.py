"""Alert channel URLs are credentials (issue 10, finding 10): a Slack incoming-webhook URL
posts to the channel by itself, so only callers with `write` read it; `read` callers see the
scheme and host with the rest masked, on every surface (the rule is in the resolver)."""

from __future__ import annotations

import pytest

from runwatch.resolvers import alerts
from runwatch.resolvers.caller import Caller, Scope
from tests.conftest import Tenant
from tests.helpers import graphql

SLACK = "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcdEFGHijklMNOPqrstUVWX"
CHANNELS = "{ alertChannels { name url } }"


@pytest.fixture
async def channels(caller: Caller) -> None:
    await alerts.create_channel(caller=caller, name="ops", kind="slack", url=SLACK,
                                allow_private=True)
    await alerts.create_channel(caller=caller, name="hook", kind="webhook",
                                url="http://[2001:db8::1]:8443/x?token=abc", allow_private=True)


@pytest.mark.parametrize("scopes,visible", [
    ("read", False), ("report", None), ("write", None), ("admin", True),
    ("read,write,report", True),
])
async def test_graphql_alert_channel_urls_need_write(client, tenant: Tenant, channels, scopes,
                                                     visible):
    data = await graphql(client, tenant, CHANNELS, scopes=scopes)
    if visible is None:  # no read scope: nothing at all
        assert data.get("errors") and not (data.get("data") or {}).get("alertChannels"), data
        return
    urls = {c["name"]: c["url"] for c in data["data"]["alertChannels"]}
    if visible:
        assert urls == {"ops": SLACK, "hook": "http://[2001:db8::1]:8443/x?token=abc"}
    else:
        assert urls == {"ops": "https://hooks.slack.com/…", "hook": "http://[2001:db8::1]:8443/…"}
    assert ("abcdEFGH" in str(data)) is visible and ("token=abc" in str(data)) is visible


async def test_the_domain_masks_for_read_callers(tenant: Tenant, channels):
    reader = Caller(organisation_id=tenant.org_id, scopes=frozenset({Scope.READ}))
    page = await alerts.list_channels(caller=reader)
    assert [c.url for c in page.items] == ["https://hooks.slack.com/…",
                                           "http://[2001:db8::1]:8443/…"]
    assert all(c.url_masked for c in page.items)


@pytest.mark.parametrize("url,masked", [
    ("https://hooks.slack.com/services/T/B/X", "https://hooks.slack.com/…"),
    ("https://example.com", "https://example.com/…"),
    ("https://u:p@example.com:8443/a?b#c", "https://example.com:8443/…"),
    ("http://[::1", "…"),
    ("nonsense", "…"),
])
def test_masked_url(url, masked):
    assert alerts.masked_url(url) == masked
