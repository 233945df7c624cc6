"""The ``transit-gateway`` command line."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from gateway.clock import clock_from_setting, parse_instant
from gateway.errors import ApiError
from gateway.feed_config import FeedConfig, parse_header
from gateway.ingest.feed_service import FeedService
from gateway.settings import DEFAULT_PORT, Settings


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="embedded store directory (default ./.transit-gateway; "
                        "ignored when REDIS_URL is set)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transit-gateway",
        description="Real-time public-transport API gateway over GTFS and GTFS-Realtime.")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, help_text in (("serve", "run the HTTP API and the feed scheduler"),
                            ("demo", "offline demo: embedded store, bundled sample feed")):
        p = sub.add_parser(name, help=help_text)
        _common(p)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=DEFAULT_PORT)
        if name == "serve":
            p.add_argument("--role", choices=("all", "api", "ingest"), default="all")
            p.add_argument("--workers", type=int, default=1)

    feeds = sub.add_parser("feeds", help="register and manage feeds").add_subparsers(
        dest="action", required=True)
    p = feeds.add_parser("add", help="register a feed and ingest its static GTFS now")
    _common(p)
    p.add_argument("feed_id")
    p.add_argument("--static", required=True, help="path or URL of the GTFS zip")
    p.add_argument("--trip-updates")
    p.add_argument("--vehicle-positions")
    p.add_argument("--alerts")
    p.add_argument("--poll-seconds", type=int, default=15)
    p.add_argument("--header", action="append", default=[],
                   help="'Name: value' sent with every fetch (repeatable)")
    for action in ("list",):
        _common(feeds.add_parser(action, help="list registered feeds"))
    for action, help_text in (("show", "show a feed's config and health"),
                              ("remove", "unregister a feed and delete its data"),
                              ("reload", "fetch and ingest the static GTFS again")):
        p = feeds.add_parser(action, help=help_text)
        _common(p)
        p.add_argument("feed_id")

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    p = keys.add_parser("create", help="create a developer key (printed once)")
    _common(p)
    p.add_argument("--email", required=True)
    p.add_argument("--name", default="")
    p.add_argument("--tier", default="bronze")
    p.add_argument("--expires", help="ISO-8601 instant")
    _common(keys.add_parser("list", help="list keys (never the key strings)"))
    p = keys.add_parser("revoke", help="revoke a key by its id")
    _common(p)
    p.add_argument("key_id")
    p = keys.add_parser("operator", help="create an operator token (printed once)")
    _common(p)
    p.add_argument("--email", required=True)
    p.add_argument("--name", default="")

    tiers = sub.add_parser("tiers", help="rate-limit tiers").add_subparsers(
        dest="action", required=True)
    p = tiers.add_parser("set", help="define or redefine a tier (0 = no limit)")
    _common(p)
    p.add_argument("name")
    p.add_argument("--per-minute", type=int, required=True)
    p.add_argument("--per-month", type=int, required=True)
    _common(tiers.add_parser("list", help="list tiers and their limits"))

    events = sub.add_parser("events", help="hackathon events").add_subparsers(
        dest="action", required=True)
    p = events.add_parser("create", help="an event code: signups with it get its tier and "
                                         "expire with it")
    _common(p)
    p.add_argument("code")
    p.add_argument("--tier", required=True)
    p.add_argument("--expires", required=True, help="ISO-8601 instant with offset")
    p.add_argument("--max-keys", type=int, required=True)
    _common(events.add_parser("list", help="list events"))
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        data_dir=getattr(args, "data_dir", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        role=getattr(args, "role", None),
        workers=getattr(args, "workers", None),
    )


def _print(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as exc:  # a malformed or out-of-range environment variable
        sys.stderr.write(f"error: {exc}\n")
        return 2
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command in ("serve", "demo"):
            from gateway.cli import run

            runner = run.serve if args.command == "serve" else run.demo
            return runner(settings)
        handler = COMMANDS[(args.command, args.action)]
        return asyncio.run(handler(settings, args))
    except ApiError as exc:
        body = exc.body()
        sys.stderr.write(f"error: {exc.code}: {exc.message}\n")
        for problem in body["error"].get("problems", []):
            where = f" ({problem['file']})" if problem.get("file") else ""
            sys.stderr.write(f"  - {problem['code']}: {problem['message']}{where}\n")
        return 2
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def _with_store(
    fn: Callable[[Settings, argparse.Namespace, Any], Awaitable[int]],
) -> Command:
    async def run(settings: Settings, args: argparse.Namespace) -> int:
        from gateway.store.opening import open_store

        async with open_store(settings) as store:
            return await fn(settings, args, store)

    return run


@_with_store
async def feeds_add(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    headers = dict(parse_header(h) for h in args.header)
    static = args.static
    if "://" not in static:
        static = str(Path(static).resolve())  # the server may run from another directory
    config = FeedConfig.from_json({
        "id": args.feed_id, "static": static, "trip_updates": args.trip_updates,
        "vehicle_positions": args.vehicle_positions, "alerts": args.alerts,
        "poll_seconds": args.poll_seconds, "headers": headers,
    })
    service = FeedService(store, settings, clock_from_setting(settings.clock))
    result = await service.add(config)
    _print({"feed": config.id, "version": result.version, "seconds": round(result.seconds, 3),
            "static": result.status.get("static")})
    return 0


@_with_store
async def feeds_list(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    configs = await store.feed_configs()
    versions = await store.feed_versions(list(configs))
    for feed_id in sorted(configs):
        status = (await store.feed_status(feed_id)).get("static") or {}
        error = status.get("last_error")
        sys.stdout.write(f"{feed_id}\tversion={versions.get(feed_id) or '-'}\t"
                         f"trips={(status.get('counts') or {}).get('trips', '-')}\t"
                         f"{'error=' + error['code'] if error else 'ok'}\t"
                         f"{configs[feed_id]['static']}\n")
    return 0


@_with_store
async def feeds_show(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    service = FeedService(store, settings, clock_from_setting(settings.clock))
    config = await service.config(args.feed_id)
    _print({"config": config.public(), "status": await store.feed_status(args.feed_id)})
    return 0


@_with_store
async def feeds_remove(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    await FeedService(store, settings, clock_from_setting(settings.clock)).remove(args.feed_id)
    sys.stdout.write(f"removed {args.feed_id}\n")
    return 0


@_with_store
async def feeds_reload(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    service = FeedService(store, settings, clock_from_setting(settings.clock))
    result = await service.reload(args.feed_id)
    _print({"feed": args.feed_id, "version": result.version, "changed": result.changed,
            "seconds": round(result.seconds, 3)})
    return 0


async def _create_key(settings: Settings, store: Any, kind: str, email: str, name: str,
                      tier: str, expires: str | None) -> int:
    from gateway.access.key_issuing import create_key
    from gateway.access.tiers import require_tier

    clock = clock_from_setting(settings.clock)
    expires_at = parse_instant(expires) if expires else None
    await require_tier(store, tier)
    key, record = await create_key(store, clock, kind=kind, email=email, name=name, tier=tier,
                                   expires=expires_at)
    sys.stdout.write(f"{key}\n")
    sys.stderr.write(f"key id {record.key_id} ({kind}, tier {record.tier}) for {email}. "
                     "The key is shown only once: store it now.\n")
    return 0


@_with_store
async def keys_create(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    return await _create_key(settings, store, "developer", args.email, args.name, args.tier,
                             args.expires)


@_with_store
async def keys_operator(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    return await _create_key(settings, store, "operator", args.email, args.name, "unlimited",
                             None)


@_with_store
async def keys_list(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    from gateway.access.keys import KeyRecord

    for key_id in await store.key_ids():
        raw = await store.key(key_id)
        if raw is None:
            continue
        r = KeyRecord.from_store(raw)
        state = "revoked" if r.revoked else "active"
        sys.stdout.write(f"{r.key_id}\t{r.kind}\t{r.tier}\t{state}\t{r.email}\t"
                         f"created={r.created}\texpires={r.expires or '-'}\n")
    return 0


@_with_store
async def keys_revoke(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    now = clock_from_setting(settings.clock).now()
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds")
    if not await store.update_key(args.key_id, {"revoked": stamp}):
        sys.stderr.write(f"error: key_not_found: no key {args.key_id!r}\n")
        return 2
    sys.stdout.write(f"revoked {args.key_id}\n")
    return 0


@_with_store
async def tiers_set(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    from gateway.access.tiers import set_tier

    limits = await set_tier(store, args.name, args.per_minute, args.per_month)
    _print({"tier": args.name, **limits.to_json()})
    return 0


@_with_store
async def tiers_list(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    from gateway.access.tiers import load_tiers

    for name, limits in sorted((await load_tiers(store)).items()):
        sys.stdout.write(f"{name}\tper_minute={limits.per_minute or 'unlimited'}\t"
                         f"per_month={limits.per_month or 'unlimited'}\n")
    return 0


@_with_store
async def events_create(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    from gateway.access.events import create_event

    clock = clock_from_setting(settings.clock)
    event = await create_event(store, clock, args.code, args.tier, parse_instant(args.expires),
                               args.max_keys)
    _print(event.public(clock.now()))
    return 0


@_with_store
async def events_list(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    from gateway.access.events import list_events

    now = clock_from_setting(settings.clock).now()
    for e in await list_events(store):
        state = "expired" if e.expires_at <= now else "open"
        sys.stdout.write(f"{e.code}\ttier={e.tier}\tkeys={e.signups}/{e.max_keys}\t"
                         f"expires={e.expires}\t{state}\n")
    return 0


COMMANDS: dict[tuple[str, str], Command] = {
    ("feeds", "add"): feeds_add,
    ("feeds", "list"): feeds_list,
    ("feeds", "show"): feeds_show,
    ("feeds", "remove"): feeds_remove,
    ("feeds", "reload"): feeds_reload,
    ("keys", "create"): keys_create,
    ("keys", "operator"): keys_operator,
    ("keys", "list"): keys_list,
    ("keys", "revoke"): keys_revoke,
    ("tiers", "set"): tiers_set,
    ("tiers", "list"): tiers_list,
    ("events", "create"): events_create,
    ("events", "list"): events_list,
}
