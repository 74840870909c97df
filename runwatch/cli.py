"""`runwatch serve | worker | migrate | org create | token create | token revoke`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from tortoise import Tortoise

from runwatch.db import apply_migrations, tortoise_config
from runwatch.resolvers.errors import DomainError, InvalidInput
from runwatch.settings import Settings, SettingsError


async def _with_orm(settings: Settings, work: Callable[[], Awaitable[Any]]) -> Any:
    await Tortoise.init(config=tortoise_config(settings.database_url))
    try:
        return await work()
    finally:
        await Tortoise.close_connections()


def _describe_db(settings: Settings) -> str:
    url = settings.database_url
    if settings.is_sqlite:
        return "SQLite file " + url.split("://", 1)[1].split("?", 1)[0]
    return "PostgreSQL " + url.split("@")[-1].split("?", 1)[0]


async def _bootstrap(settings: Settings) -> tuple[int, str] | None:
    """On an empty *embedded* database: a default organisation and an admin token, returned
    once (organisation id, token). A PostgreSQL deployment is never given a token it did not
    ask for: its operators create organisations and tokens with the CLI."""
    from runwatch.resolvers.organisations import create_organisation, organisation_count
    from runwatch.resolvers.tokens import create_token

    if not settings.is_sqlite or await organisation_count():
        return None
    org = await create_organisation(name="default")
    issued = await create_token(organisation_id=org.id, scopes="admin", name="bootstrap admin")
    return org.id, issued.token


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = asyncio.run(apply_migrations(settings.database_url))
    print(f"{_describe_db(settings)}: " + (
        f"applied {', '.join(applied)}" if applied else "already up to date"))
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from runwatch.app import create_app

    host = args.host or settings.host
    port = args.port or settings.port
    applied = asyncio.run(apply_migrations(settings.database_url))
    if applied:
        print(f"Applied migrations: {', '.join(applied)}")
    bootstrapped = asyncio.run(_with_orm(settings, lambda: _bootstrap(settings)))
    base = f"http://{'localhost' if host in {'127.0.0.1', '0.0.0.0', '::'} else host}:{port}"
    print(f"runwatch {_describe_db(settings)}")
    if settings.graphiql:
        print(f"GraphiQL console: {base}/graphql")
    else:
        print(f"GraphQL API: {base}/graphql (console off: RUNWATCH_GRAPHIQL=0)")
    if bootstrapped:
        org_id, token = bootstrapped
        print(f"Created organisation {org_id} ('default') and an admin token "
              "(shown only this once):")
        print(f"  {token}")
        print("In GraphiQL, open Headers and add:")
        print(f'  {{"Authorization": "Bearer {token}"}}')
    else:
        print("Send a token as 'Authorization: Bearer <token>'; make one with:")
        print("  runwatch org create NAME            # prints the organisation's id")
        print("  runwatch token create --org ID --scope read,write,report")
    sys.stdout.flush()
    # websockets' sans-I/O protocol: the default one is websockets' deprecated legacy API.
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info",
                ws="websockets-sansio")
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.services.workers import run_workers

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"runwatch worker on {_describe_db(settings)}", flush=True)
        await _with_orm(settings, lambda: run_workers(settings, stop))

    asyncio.run(main())
    return 0


def cmd_org_create(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.resolvers.organisations import create_organisation

    org = asyncio.run(_with_orm(settings, lambda: create_organisation(name=args.name)))
    print(org.id)
    return 0


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.resolvers.tokens import create_token

    issued = asyncio.run(_with_orm(settings, lambda: create_token(
        organisation_id=args.org, scopes=args.scope, name=args.name)))
    print(f"token {issued.id} for organisation {issued.organisation_id}, scopes "
          f"{','.join(sorted(issued.scopes))}; it is shown only once:")
    print(issued.token)
    return 0


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.resolvers.tokens import revoke_token

    token_id = int(args.token) if args.token.isascii() and args.token.isdigit() else None
    revoked = asyncio.run(_with_orm(settings, lambda: revoke_token(
        token_id=token_id, token=None if token_id is not None else args.token)))
    print(f"revoked token {revoked}")
    return 0


def cmd_token_rotate(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.resolvers.clock import iso
    from runwatch.resolvers.tokens import rotate_token

    token_id = int(args.token) if args.token.isascii() and args.token.isdigit() else None
    overlap = (settings.token_rotation_overlap_seconds if args.overlap_seconds is None
               else args.overlap_seconds)
    issued = asyncio.run(_with_orm(settings, lambda: rotate_token(
        token_id=token_id, token=None if token_id is not None else args.token,
        overlap_seconds=overlap)))
    print(f"token {issued.id} replaces token {issued.replaces} (organisation "
          f"{issued.organisation_id}, scopes {','.join(sorted(issued.scopes))}), which keeps "
          f"working until {iso(issued.replaced_until)}; the new token is shown only once:")
    print(issued.token)
    return 0


def _operator(org_id: int):  # type: ignore[no-untyped-def]
    """The CLI acts for an organisation as its administrator (it has the database)."""
    from runwatch.resolvers.caller import Caller, Scope

    return Caller(organisation_id=org_id, scopes=frozenset({Scope.ADMIN}))


async def _gateway_org(gateway_id: int) -> int:
    from runwatch.models import Gateway

    gateway = await Gateway.filter(id=gateway_id).first()
    if gateway is None:
        raise DomainError(f"gateway {gateway_id} not found")
    return gateway.organisation_id  # type: ignore[attr-defined]


def cmd_gateway_create(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.models import Organisation
    from runwatch.resolvers.gateways import create_gateway

    async def work():  # type: ignore[no-untyped-def]
        if not await Organisation.filter(id=args.org).exists():
            raise DomainError(f"organisation {args.org} not found")
        return await create_gateway(caller=_operator(args.org), name=args.name)

    gateway, issued = asyncio.run(_with_orm(settings, work))
    print(f"gateway {gateway.id} ({gateway.name!r}) for organisation {args.org}; its token is "
          "shown only once:")
    print(issued.token)
    return 0


def cmd_gateway_token(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.resolvers.gateways import issue_gateway_token

    async def work():  # type: ignore[no-untyped-def]
        org = await _gateway_org(args.gateway)
        return await issue_gateway_token(caller=_operator(org), gateway_id=args.gateway,
                                         revoke_others=args.revoke_others)

    issued = asyncio.run(_with_orm(settings, work))
    print(f"a new token for gateway {args.gateway}"
          + ("; its earlier tokens are revoked" if args.revoke_others else "")
          + "; it is shown only once:")
    print(issued.token)
    return 0


def cmd_gateway_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.resolvers.gateways import revoke_gateway

    async def work():  # type: ignore[no-untyped-def]
        org = await _gateway_org(args.gateway)
        return await revoke_gateway(caller=_operator(org), gateway_id=args.gateway)

    gateway = asyncio.run(_with_orm(settings, work))
    print(f"revoked gateway {gateway.id} ({gateway.name!r}) and its tokens")
    return 0


def cmd_gateway_list(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.resolvers.gateways import list_gateways

    async def work():  # type: ignore[no-untyped-def]
        rows, after = [], None
        while True:
            page = await list_gateways(caller=_operator(args.org), first=200, after=after,
                                       include_revoked=True)
            rows.extend(page.items)
            if not page.has_next_page:
                return rows
            after = page.end_cursor

    for g in asyncio.run(_with_orm(settings, work)):
        state = "revoked" if g.revoked_at else (
            f"last seen {g.last_seen_at.isoformat()}" if g.last_seen_at else "never seen")
        print(f"{g.id}\t{g.name}\t{g.version or '-'}\t{state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runwatch",
        description="runwatch: the system of record for data-pipeline runs. "
        "Configured by environment variables (DATABASE_URL, RUNWATCH_*).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="apply migrations and serve the API (and workers)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("worker", help="run the background workers only").set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="apply pending migrations").set_defaults(func=cmd_migrate)

    org = sub.add_parser("org", help="organisations").add_subparsers(dest="org_cmd", required=True)
    org_create = org.add_parser("create", help="create an organisation; prints its id")
    org_create.add_argument("name")
    org_create.set_defaults(func=cmd_org_create)

    token = sub.add_parser("token", help="service tokens").add_subparsers(
        dest="token_cmd", required=True)
    create = token.add_parser("create", help="create a token; prints it once, last line")
    create.add_argument("--org", type=int, required=True, help="organisation id")
    create.add_argument("--scope", required=True, help="read,write,report,admin (comma list)")
    create.add_argument("--name", default="token")
    create.set_defaults(func=cmd_token_create)
    revoke = token.add_parser("revoke", help="revoke a token by id or by the token itself")
    revoke.add_argument("token")
    revoke.set_defaults(func=cmd_token_revoke)
    rotate = token.add_parser(
        "rotate", help="issue a successor for a token (by id or by the token itself); the old "
        "one keeps working for the overlap, then stops; prints the new token once, last line")
    rotate.add_argument("token")
    rotate.add_argument("--overlap-seconds", type=int, metavar="N",
                        help="how long the old token keeps working (default: "
                        "RUNWATCH_TOKEN_ROTATION_OVERLAP_SECONDS, 86400; 0: stops at once)")
    rotate.set_defaults(func=cmd_token_rotate)

    gateway = sub.add_parser("gateway", help="gateways (agents that claim and execute runs)"
                             ).add_subparsers(dest="gateway_cmd", required=True)
    g_create = gateway.add_parser("create", help="create a gateway; prints its token once, "
                                  "last line")
    g_create.add_argument("--org", type=int, required=True, help="organisation id")
    g_create.add_argument("name")
    g_create.set_defaults(func=cmd_gateway_create)
    g_token = gateway.add_parser("token", help="issue another token for a gateway (rotation)")
    g_token.add_argument("gateway", type=int, help="gateway id")
    g_token.add_argument("--revoke-others", action="store_true",
                         help="revoke the gateway's earlier tokens")
    g_token.set_defaults(func=cmd_gateway_token)
    g_revoke = gateway.add_parser("revoke", help="revoke a gateway and all its tokens")
    g_revoke.add_argument("gateway", type=int, help="gateway id")
    g_revoke.set_defaults(func=cmd_gateway_revoke)
    g_list = gateway.add_parser("list", help="an organisation's gateways")
    g_list.add_argument("--org", type=int, required=True, help="organisation id")
    g_list.set_defaults(func=cmd_gateway_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return args.func(settings, args)
    except SettingsError as exc:
        print(f"runwatch: {exc}", file=sys.stderr)
        return 2
    except InvalidInput as exc:
        print(f"runwatch: {exc.message}", file=sys.stderr)
        return 2
    except DomainError as exc:
        print(f"runwatch: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
