"""``hss-sync-bot``: run the bot, query a task, run the simulator or the demo.

Exit status of ``query``: 0 no printed registry failed, 3 some failed, 2 bad usage or
configuration, 1 API or network error. Logging is configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.errors import BotError, CommandError, ConfigError, ConfigErrors, StoreError
from bot.models import Answer, LookupRequest, SyncStatus
from bot.ops import logs
from bot.slack.command import (
    parse_status,
    parse_types,
    validate_ep,
    validate_name,
    validate_task_id,
)
from bot.table import age_text, format_table

if TYPE_CHECKING:
    from bot.runtime import Runtime

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3

logger = logging.getLogger("bot.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own error() prints the whole usage block; one line is kinder.
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hss-sync-bot",
        description=__doc__.splitlines()[0].replace("``", "") if __doc__ else "",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("run", help="serve Slack (Socket Mode with SLACK_APP_TOKEN, else HTTP)")
    q = sub.add_parser("query", help="print the registries of an image-sync task")
    q.add_argument("task_id")
    q.add_argument("status", nargs="?", help="finished, running or failed")
    q.add_argument(
        "--type", dest="types", help="registry types, comma-separated (e.g. Harbor,Jfrog)"
    )
    q.add_argument("--name", help="registry name (substring)")
    q.add_argument("--ep", help="enterprise project id (default HSS_ENTERPRISE_PROJECT_ID)")
    q.add_argument("--json", action="store_true", help="print a JSON array")
    sub.add_parser("simulate", help="serve the HSS simulator (see simulate --help)", add_help=False)
    sub.add_parser(
        "demo", help="play a scripted Slack session on embedded defaults", add_help=False
    )
    sub.add_parser("reset-auth", help="allow HSS calls again after an authentication failure")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # simulate and demo own their flags.
    if args_list[:1] == ["simulate"]:
        from bot.sandbox.sim_server import cli_main as simulate_main

        return int(simulate_main(args_list[1:]))
    if args_list[:1] == ["demo"]:
        from bot.sandbox.demo import main as demo_main

        return int(demo_main(args_list[1:]))
    args = build_parser().parse_args(args_list)
    request = None
    if args.command == "query":
        try:  # bad usage is reported before configuration, like argparse's own errors
            request = request_from_args(args)
        except CommandError as exc:
            print(f"hss-sync-bot query: {exc.user_message()}", file=sys.stderr)
            return EXIT_USAGE
    try:
        settings = _settings(args.command)
        level = settings.log_level or ("INFO" if args.command == "run" else "WARNING")
        _configure_logging(level, logs.secret_values(settings))
        if request is not None:
            return _query(request, settings, as_json=args.json)
        if args.command == "run":
            return _run(settings)
        return _reset_auth(settings)
    except ConfigError as exc:
        for each in exc.problems if isinstance(exc, ConfigErrors) else [exc]:
            print(f"hss-sync-bot: {each.variable}: {each.problem}", file=sys.stderr)
        return EXIT_USAGE
    except BotError as exc:
        print(f"hss-sync-bot: {exc.user_message()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR


def _settings(command: str) -> Settings:
    """The settings, or every problem with them at once: malformed values and, for the
    command at hand, missing ones."""
    return Settings.for_command(os.environ, hss=True, slack=command == "run")


def _configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """JSON lines on stderr (plain text on a terminal), with ``secrets`` masked in every
    line whatever logged them (see ``bot.ops.logs``)."""
    logs.configure(level, stream=sys.stderr, secrets=secrets, queued=True)


def _run(settings: Settings) -> int:
    from bot.ops.server import serve

    asyncio.run(serve(settings))
    return EXIT_OK


def _reset_auth(settings: Settings) -> int:
    async def go() -> bool:
        runtime = await _open_runtime(settings)
        try:
            await _require_redis(runtime)
            return await runtime.lookups.reset_auth()
        finally:
            await runtime.aclose()

    had = asyncio.run(go())
    print("HSS calls allowed again." if had else "No authentication lock was set.")
    return EXIT_OK


async def _open_runtime(settings: Settings) -> Runtime:
    from bot.runtime import open_runtime

    return await open_runtime(settings)


async def _require_redis(runtime: Runtime) -> None:
    from bot.storage.outage import PING_FAILED

    # The lock lives in Redis; the in-process fallback would "clear" a copy nobody reads.
    try:
        await runtime.redis.ping()
    except PING_FAILED as exc:
        raise StoreError(
            f"Cannot reach Redis ({type(exc).__name__}), where the authentication lock is "
            "kept; nothing was changed. Try again when Redis is back."
        ) from None


# --- query ---


def request_from_args(args: argparse.Namespace) -> LookupRequest:
    """Validate like the slash command does; raises CommandError."""
    return LookupRequest(
        task_id=validate_task_id(args.task_id),
        status=parse_status(args.status) if args.status is not None else None,
        types=parse_types(args.types.split(",")) if args.types is not None else frozenset(),
        name=validate_name(args.name) if args.name is not None else None,
        ep=validate_ep(args.ep) if args.ep is not None else None,
    )


def _query(request: LookupRequest, settings: Settings, *, as_json: bool) -> int:
    try:
        answer = asyncio.run(_fetch(settings, request))
    except ConfigError:
        raise
    except CommandError as exc:
        print(f"hss-sync-bot query: {exc.user_message()}", file=sys.stderr)
        return EXIT_USAGE
    except BotError as exc:
        print(f"hss-sync-bot query: {exc.user_message()}", file=sys.stderr)
        return EXIT_ERROR
    return _print_answer(answer, as_json=as_json)


async def _fetch(settings: Settings, request: LookupRequest) -> Answer:
    from bot.lookup import note_lookup

    started = time.monotonic()
    runtime = await _open_runtime(settings)
    try:
        peek = await runtime.lookups.peek(request)
        if peek.fresh:
            note_lookup(peek.answer, "fresh", started=started, now=time.time())
            return peek.answer
        wait = await runtime.lookups.wait_estimate(request)
        if wait > 1.0:
            print(
                f"Waiting about {wait:.0f} s for an HSS call slot "
                f"(budget {settings.rate_limit} shared by every user of this AK)…",
                file=sys.stderr,
            )
        try:
            answer = await runtime.lookups.refresh(request)
        except BotError as exc:
            note_lookup(peek.answer, "failed", started=started, now=time.time(), error=exc)
            raise
        note_lookup(answer, "refreshed", started=started, now=time.time())
        return answer
    finally:
        await runtime.aclose()


def _print_answer(answer: Answer, *, as_json: bool) -> int:
    rows = answer.registries
    try:
        if as_json:
            json.dump([r.as_api_dict() for r in rows], sys.stdout, ensure_ascii=False, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(format_table(rows))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`| head`); point stdout at devnull so the exit flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    failed = sum(1 for r in rows if r.sync_status == SyncStatus.FAILED.value)
    age = age_text(answer.fetched_at, time.time())
    print(f"{len(rows)} registries, {failed} failed; data from {age}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
