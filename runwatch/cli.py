"""The `runwatch` command: serve, worker, migrate, demo, and organisation, token and gateway
administration. Every command uses the same database, wherever it is run: `--database-url`,
else `DATABASE_URL`, else the file in runwatch's data directory (see `runwatch.settings`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tortoise import Tortoise, connections
from tortoise.backends.base.config_generator import expand_db_url

from runwatch import __version__, metrics
from runwatch.db import apply_migrations, pending_migrations, tortoise_config
from runwatch.resolvers.errors import DomainError, InvalidInput
from runwatch.settings import Settings, SettingsError
from runwatch.ws_protocol import UVICORN_WS


class NotReady(Exception):
    """The database cannot be used yet (missing, not migrated, unreachable): what to do."""


def _sqlite_path(settings: Settings) -> Path | None:
    if not settings.is_sqlite:
        return None
    path = expand_db_url(settings.database_url)["credentials"]["file_path"]
    return None if path == ":memory:" else Path(path)


async def _check_schema(settings: Settings) -> None:
    """Refuse to work on a database without runwatch's schema, or one that needs migrations,
    with the command that fixes it. A SQLite file that does not exist is not created."""
    path = _sqlite_path(settings)
    if path is not None and not path.is_file():
        raise NotReady(
            f"there is no runwatch database at {path} yet: run `runwatch migrate` (or "
            "`runwatch serve`, which migrates) first, or point --database-url / DATABASE_URL "
            "at an existing one")
    try:
        pending = await asyncio.wait_for(pending_migrations(connections.get("default")), 15)
    except Exception as exc:  # unreachable, refused, no such database: say so, no traceback
        raise NotReady(f"cannot use {_describe_db(settings)}: {exc or 'timed out'}") from None
    if pending is None:
        raise NotReady(f"{_describe_db(settings)} has no runwatch schema yet: run "
                       "`runwatch migrate` (or `runwatch serve`, which migrates) first")
    if pending:
        raise NotReady(f"{_describe_db(settings)} needs migrations ({', '.join(pending)}): "
                       "run `runwatch migrate`")


async def _with_orm(settings: Settings, work: Callable[[], Awaitable[Any]]) -> Any:
    path = _sqlite_path(settings)
    if path is not None and not path.is_file():
        await _check_schema(settings)  # before Tortoise would create an empty file
    await Tortoise.init(config=tortoise_config(settings.database_url))
    try:
        await _check_schema(settings)
        return await work()
    finally:
        await Tortoise.close_connections()


def _prepare_sqlite_dir(settings: Settings) -> None:
    """`serve` and `migrate` create the data directory of a new embedded database."""
    path = _sqlite_path(settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


async def _migrate(settings: Settings) -> list[str]:
    _prepare_sqlite_dir(settings)
    try:
        return await apply_migrations(settings.database_url)
    except (OSError, TimeoutError) as exc:
        raise NotReady(f"cannot reach {_describe_db(settings)}: {exc or 'timed out'}") from None
    except Exception as exc:
        import asyncpg

        if not isinstance(exc, asyncpg.PostgresError):
            raise
        raise NotReady(f"cannot use {_describe_db(settings)}: {exc}") from None


def _describe_db(settings: Settings) -> str:
    url = settings.database_url
    if settings.is_sqlite:
        return "SQLite file " + url.split("://", 1)[1].split("?", 1)[0]
    return "PostgreSQL " + url.split("@")[-1].split("?", 1)[0]


async def _bootstrap(settings: Settings) -> tuple[int, str | None] | None:
    """On a database without organisations: organisation 1 ("default") and an admin token,
    returned once as (organisation id, token). The token is the operator's
    `RUNWATCH_BOOTSTRAP_TOKEN` when set (then None is returned in its place: it is never
    printed), on any database; otherwise a generated one, on the embedded SQLite default only:
    a PostgreSQL deployment is never given a token it did not ask for."""
    from runwatch.resolvers.organisations import create_organisation, organisation_count
    from runwatch.resolvers.tokens import create_token

    preset = settings.bootstrap_token or None
    if (not settings.is_sqlite and preset is None) or await organisation_count():
        return None
    org = await create_organisation(name="default")
    issued = await create_token(organisation_id=org.id, scopes="admin", name="bootstrap admin",
                                preset=preset)
    return org.id, None if preset else issued.token


async def _organisations_summary() -> list[tuple[int, str, int]]:
    from runwatch.resolvers.organisations import list_organisations

    return [(org.id, org.name, live) for org, live in await list_organisations()]


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = asyncio.run(_migrate(settings))
    print(f"{_describe_db(settings)}: " + (
        f"applied {', '.join(applied)}" if applied else "already up to date"))
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from runwatch import supervisor

    if args.graceful_timeout is not None and not args.graceful_timeout >= 0:
        raise SettingsError(f"--graceful-timeout must be at least 0, got {args.graceful_timeout}")
    if args.graceful_timeout is not None:
        settings = replace(settings, graceful_timeout_seconds=args.graceful_timeout)
    workers = supervisor.worker_count(settings, args.workers, force=args.force_workers)
    host = args.host or settings.host
    port = args.port or settings.port
    applied = asyncio.run(_migrate(settings))
    if applied:
        print(f"Applied migrations: {', '.join(applied)}")

    async def startup() -> tuple[tuple[int, str | None] | None, list[tuple[int, str, int]]]:
        return await _bootstrap(settings), await _organisations_summary()

    bootstrapped, orgs = asyncio.run(_with_orm(settings, startup))
    base = f"http://{'localhost' if host in {'127.0.0.1', '0.0.0.0', '::'} else host}:{port}"
    print(f"runwatch {__version__} on {_describe_db(settings)}")
    if settings.ui:
        print(f"Status UI: {base}/ (sign in with a token)")
    if settings.graphiql:
        print(f"GraphiQL console: {base}/graphql")
    else:
        print(f"GraphQL API: {base}/graphql (console off: RUNWATCH_GRAPHIQL=0)")
    print(f"Health: {base}/health (alive) and {base}/ready (database, migrations, workers)")
    if settings.metrics:
        print(f"Metrics: {base}/metrics "
              f"(PROMETHEUS_MULTIPROC_DIR={metrics.ensure_multiproc_dir()})")
    if bootstrapped and bootstrapped[1] is None:
        print(f"Created organisation {bootstrapped[0]} ('default') with the admin token given "
              "in RUNWATCH_BOOTSTRAP_TOKEN (stored hashed, not shown).")
    elif bootstrapped:
        org_id, token = bootstrapped
        print(f"Created organisation {org_id} ('default') and an admin token "
              "(shown only this once):")
        print(f"  {token}")
        print("In GraphiQL, open Headers and add:")
        print(f'  {{"Authorization": "Bearer {token}"}}')
    elif orgs:
        listed = ", ".join(f"{i} ({name!r}, {live} live token{'s' * (live != 1)})"
                           for i, name, live in orgs[:5])
        more = f" and {len(orgs) - 5} more (runwatch org list)" if len(orgs) > 5 else ""
        print(f"Organisations: {listed}{more}.")
        print("Send a token as 'Authorization: Bearer <token>'. Lost it? Make another "
              "(printed once) and see the existing ones with:")
        print(f"  runwatch{args.cli_db} token create --org {orgs[0][0]} --scope admin")
        print(f"  runwatch{args.cli_db} token list --org {orgs[0][0]}")
    else:
        print("No organisation yet. Send a token as 'Authorization: Bearer <token>'; make one "
              "with:")
        print(f"  runwatch{args.cli_db} org create NAME   # prints the organisation's id")
        print(f"  runwatch{args.cli_db} token create --org ID --scope read,write,report")
    if workers > 1:
        print(f"{workers} API processes" + (" and one for the background workers"
                                            if settings.workers_in_serve else ""))
    sys.stdout.flush()
    # websockets' sans-I/O protocol (the default one is websockets' deprecated legacy API),
    # lighter per open socket: runwatch.ws_protocol.
    supervisor.serve(settings, host=host, port=port, workers=workers, log_level="info",
                     ws=UVICORN_WS, ws_per_message_deflate=settings.ws_compression)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch import malloc
    from runwatch.services.workers import run_workers

    malloc.cap_arenas()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"runwatch worker on {_describe_db(settings)}", flush=True)
        metrics.configure(settings)  # counts into PROMETHEUS_MULTIPROC_DIR (RUNWATCH_METRICS)
        with malloc.startup_frozen():
            async with malloc.trimming():  # see runwatch.malloc
                await _with_orm(settings, lambda: run_workers(settings, stop))

    asyncio.run(main())
    return 0


def cmd_org_create(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.resolvers.organisations import create_organisation

    org = asyncio.run(_with_orm(settings, lambda: create_organisation(name=args.name)))
    print(org.id)
    return 0


def cmd_org_list(settings: Settings, args: argparse.Namespace) -> int:
    orgs = asyncio.run(_with_orm(settings, _organisations_summary))
    if not orgs:
        print("no organisations yet: create one with `runwatch org create NAME`",
              file=sys.stderr)
        return 0
    print("id\tname\tlive tokens")
    for org_id, name, live in orgs:
        print(f"{org_id}\t{name}\t{live}")
    return 0


def _when(value: Any) -> str:
    from runwatch.resolvers.clock import iso

    return iso(value) if value is not None else "-"


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from runwatch.resolvers.tokens import list_tokens

    tokens = asyncio.run(_with_orm(settings, lambda: list_tokens(organisation_id=args.org)))
    now = datetime.now(UTC)
    print("id\tname\tscopes\tcreated\tlast used\tstate")
    for t in tokens:
        if t.revoked_at is not None:
            state = f"revoked {_when(t.revoked_at)}"
        elif t.expires_at is not None:
            state = f"{'expired' if t.expires_at <= now else 'expires'} {_when(t.expires_at)}"
        else:
            state = "active"
        scopes = t.scopes + (f" (gateway {t.gateway_id})" if t.gateway_id else "")
        print(f"{t.id}\t{t.name}\t{scopes}\t{_when(t.created_at)}\t"
              f"{_when(t.last_used_at) if t.last_used_at else 'never'}\t{state}")
    return 0


def cmd_token_generate(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.resolvers.tokens import generate_token

    print(generate_token())
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
    # `--database-url` is accepted before the command and after it (SUPPRESS: the one given
    # wins, else none).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url", metavar="URL", default=argparse.SUPPRESS,
        help="the database to use (overrides DATABASE_URL): sqlite://PATH or "
        "postgres://USER@HOST:PORT/DB; default: $RUNWATCH_HOME/runwatch.db, else "
        "~/.local/share/runwatch/runwatch.db (or under $XDG_DATA_HOME)")
    parser = argparse.ArgumentParser(
        prog="runwatch", parents=[common],
        description="runwatch: the system of record for data-pipeline runs. Every command "
        "uses the same database wherever it is run: --database-url, else DATABASE_URL, else "
        "the embedded SQLite file in the data directory. Other settings come from the "
        "environment (RUNWATCH_*; see the README's Configuration).",
    )
    parser.add_argument("--version", action="version", version=f"runwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(group: Any, name: str, help: str, func: Callable[..., int]
                ) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    serve = command(sub, "serve", "apply pending migrations, create organisation 1 and an "
                    "admin token on an empty embedded database, then serve the API (GraphQL, "
                    "the REST shims, /health and /ready) and, unless "
                    "RUNWATCH_WORKERS_IN_SERVE=0, the background workers", cmd_serve)
    serve.add_argument("--host", help="address to listen on (default: RUNWATCH_HOST, "
                       "127.0.0.1; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, help="port to listen on (default: RUNWATCH_PORT, "
                       "else PORT, else 8000)")
    serve.add_argument("--workers", type=int, metavar="N", help="API processes (default: "
                       "RUNWATCH_SERVE_WORKERS, else one per core on PostgreSQL, one on "
                       "SQLite); with more than one, the background workers run in one more "
                       "process of their own")
    serve.add_argument("--force-workers", action="store_true", help="allow --workers above 1 "
                       "on SQLite (one writer at a time: the processes wait for each other)")
    serve.add_argument("--graceful-timeout", type=float, metavar="SECONDS", help="on SIGTERM, "
                       "how long requests in flight and background work in hand may finish "
                       "before work is given back (default: RUNWATCH_GRACEFUL_TIMEOUT_SECONDS, "
                       "20)")
    command(sub, "worker", "run the background workers only (stuck-run reaper, webhook and "
            "alert delivery, scheduled checks, retention), for deployments that run them apart "
            "from the servers", cmd_worker)
    command(sub, "migrate", "apply pending migrations (creates the embedded database and its "
            "directory if needed)", cmd_migrate)
    command(sub, "demo", "seed a realistic demo organisation (connections, pipelines, a week "
            "of runs with failures and an anomaly, a webhook endpoint, ELT runs with logs) and "
            "print an admin token for it", cmd_demo)

    org = sub.add_parser("org", help="organisations (tenants)", description="organisations "
                         "(tenants)").add_subparsers(dest="org_cmd", required=True,
                                                     metavar="COMMAND")
    org_create = command(org, "create", "create an organisation; prints its id", cmd_org_create)
    org_create.add_argument("name", help="the organisation's display name")
    command(org, "list", "every organisation: id, name, live tokens", cmd_org_list)

    token = sub.add_parser("token", help="service tokens", description="service tokens "
                           "(`Authorization: Bearer <token>`)").add_subparsers(
        dest="token_cmd", required=True, metavar="COMMAND")
    create = command(token, "create", "create a token; prints it once, last line",
                     cmd_token_create)
    create.add_argument("--org", type=int, required=True, help="organisation id")
    create.add_argument("--scope", required=True,
                        help="comma list of read, write, report, admin")
    create.add_argument("--name", default="token", help="a label to recognise it by "
                        "(default: token)")
    t_list = command(token, "list", "an organisation's tokens: id, name, scopes, created, last "
                     "used, revoked or expiry (never the secret)", cmd_token_list)
    t_list.add_argument("--org", type=int, required=True, help="organisation id")
    revoke = command(token, "revoke", "revoke a token by id or by the token itself",
                     cmd_token_revoke)
    revoke.add_argument("token", help="a token id (see `token list`) or the token itself")
    rotate = command(
        token, "rotate", "issue a successor for a token (by id or by the token itself); the "
        "old one keeps working for the overlap, then stops; prints the new token once, last "
        "line", cmd_token_rotate)
    rotate.add_argument("token", help="a token id (see `token list`) or the token itself")
    rotate.add_argument("--overlap-seconds", type=int, metavar="N",
                        help="how long the old token keeps working (default: "
                        "RUNWATCH_TOKEN_ROTATION_OVERLAP_SECONDS, 86400; 0: stops at once)")
    command(token, "generate", "print a new random token without storing it (for "
            "RUNWATCH_BOOTSTRAP_TOKEN); touches no database", cmd_token_generate)

    gateway = sub.add_parser("gateway", help="gateways (agents that claim and execute runs)",
                             description="gateways (agents that claim and execute runs)"
                             ).add_subparsers(dest="gateway_cmd", required=True,
                                              metavar="COMMAND")
    g_create = command(gateway, "create", "create a gateway; prints its token once, last line",
                       cmd_gateway_create)
    g_create.add_argument("--org", type=int, required=True, help="organisation id")
    g_create.add_argument("name", help="the gateway's name, unique in its organisation")
    g_token = command(gateway, "token", "issue another token for a gateway (rotation)",
                      cmd_gateway_token)
    g_token.add_argument("gateway", type=int, help="gateway id")
    g_token.add_argument("--revoke-others", action="store_true",
                         help="revoke the gateway's earlier tokens")
    g_revoke = command(gateway, "revoke", "revoke a gateway and all its tokens",
                       cmd_gateway_revoke)
    g_revoke.add_argument("gateway", type=int, help="gateway id")
    g_list = command(gateway, "list", "an organisation's gateways", cmd_gateway_list)
    g_list.add_argument("--org", type=int, required=True, help="organisation id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    url = getattr(args, "database_url", None)
    # how to repeat the database choice in advice the CLI prints
    args.cli_db = f" --database-url {url}" if url else ""
    try:
        env = dict(os.environ)
        if url:
            env["DATABASE_URL"] = url
        settings = Settings.from_env(env)
        if settings.database_note and args.func is not cmd_token_generate:
            print(f"runwatch: {settings.database_note}", file=sys.stderr)
        return args.func(settings, args)
    except SettingsError as exc:
        print(f"runwatch: {exc}", file=sys.stderr)
        return 2
    except NotReady as exc:
        print(f"runwatch: {exc}", file=sys.stderr)
        return 1
    except InvalidInput as exc:
        print(f"runwatch: {exc.message}", file=sys.stderr)
        return 2
    except DomainError as exc:
        print(f"runwatch: {exc.message}", file=sys.stderr)
        return 1


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from runwatch.demo import seed_demo

    org_id, token = asyncio.run(_with_orm(settings, seed_demo))
    print(f"Seeded demo organisation {org_id}; an admin token for it (shown only once):")
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
