"""``hss-sync-bot``: run the bot, query a task, list the sync runs, run the simulator or the
demo.

Exit status of ``query``: 0 no printed registry failed, 3 some failed, 2 bad usage or
configuration, 1 API or network error; of ``tasks`` the same, for listed runs with failures.
Logging is configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bot import cli_tasks
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
from bot.slack.tasks_command import ListTasks
from bot.slack.text import data_age
from bot.table import format_table, printable, run_time, write_stdout

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from bot.storage.runs_store import RunsSnapshot

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3

logger = logging.getLogger("bot.cli")


class _Parser(argparse.ArgumentParser):
    """Errors in one line. A sub-command made with ``owns_flags=True`` (simulate, demo)
    parses its own flags and shows its own ``--help``: this parser only hands it every
    argument after its name, as given, in ``args.argv``."""

    def __init__(self, *args: Any, owns_flags: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owns_flags = owns_flags

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self._owns_flags:
            return super().parse_known_args(args, namespace)
        parsed, _ = super().parse_known_args([], namespace or argparse.Namespace())  # defaults
        parsed.argv = list(sys.argv[1:] if args is None else args)
        return parsed, []

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own error() prints the whole usage block; one line is kinder.
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


_QUERY_EPILOG = """\
exit status:
  0  no printed registry failed
  3  some printed registry failed
  2  bad usage or configuration (each problem on stderr, naming its variable)
  1  HSS, Redis or the network failed (the reason on stderr)

environment (the bot's settings; see the README's Configuration):
  CLOUD_SDK_AK, CLOUD_SDK_SK   the access key pair (required)
  HSS_PROJECT_ID               project id of the HSS region (required)
  HSS_REGION or HSS_ENDPOINT   where HSS is (one of them required)
  CLOUD_SDK_SECURITY_TOKEN     for temporary credentials
  HSS_ENTERPRISE_PROJECT_ID    the default of --ep (HSS's default is 0)
  REDIS_URL                    share the bot's mirror and call budget (default: an
                               embedded Redis in HSS_DATA_DIR, .hss-sync-bot)
  HSS_RATE_LIMIT               the call budget (default 5/60s)
  HSS_FRESH_SECONDS            answer from data younger than this (default 60)
  LOG_LEVEL                    log level on stderr (default WARNING)

The data's age goes to stderr; the registries to stdout."""

_RUN_DESCRIPTION = """\
Serve Slack: over Socket Mode when SLACK_APP_TOKEN is set, else over HTTP on PORT
(POST /slack/events, verified with SLACK_SIGNING_SECRET); /healthz, /readyz and /metrics on
PORT either way. Needs SLACK_BOT_TOKEN and the HSS settings of query --help."""

_RESET_DESCRIPTION = """\
Allow HSS calls again after an authentication failure (401/403) stopped them. The lock
belongs to one AK/SK pair: after changing CLOUD_SDK_AK or CLOUD_SDK_SK there is nothing to
reset. Needs the bot's settings: its HSS key pair and project (see query --help), and its
REDIS_URL (or HSS_DATA_DIR for the embedded Redis), where the lock is kept."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hss-sync-bot",
        description=__doc__.splitlines()[0].replace("``", "") if __doc__ else "",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser(
        "run",
        help="serve Slack (Socket Mode with SLACK_APP_TOKEN, else HTTP)",
        description=_RUN_DESCRIPTION,
    )
    run.set_defaults(func=_run_command)
    q = sub.add_parser(
        "query",
        help="print the registries of an image-sync task",
        description="Print the registries of an image-sync task as a table (or JSON): from\n"
        "the mirror when its data is fresh, else from HSS within the shared call budget.",
        epilog=_QUERY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument(
        "task_id",
        help="the image-sync task's id, or latest, latest-auto, latest-manual: the newest "
        "run (of that kind)",
    )
    q.add_argument(
        "status",
        nargs="?",
        help="only registries that are finished, running or failed (default: every status)",
    )
    q.add_argument(
        "--type",
        dest="types",
        help="registry types, comma-separated, e.g. Harbor,Jfrog (default: every type)",
    )
    q.add_argument("--name", help="registries whose name contains NAME (default: any name)")
    q.add_argument("--ep", help="enterprise project id (default HSS_ENTERPRISE_PROJECT_ID)")
    q.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array with the API's field names (default: a table)",
    )
    q.set_defaults(func=_query_command)
    tasks = sub.add_parser(
        "tasks",
        help="list the image-sync runs, newest first",
        description=cli_tasks.DESCRIPTION,
        epilog=cli_tasks.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_tasks.add_arguments(tasks)
    tasks.set_defaults(func=_tasks_command)
    simulate = sub.add_parser(
        "simulate",
        help="serve the HSS simulator (see simulate --help)",
        add_help=False,
        owns_flags=True,
    )
    simulate.set_defaults(func=_simulate_command)
    demo = sub.add_parser(
        "demo",
        help="play a scripted Slack session on embedded defaults",
        add_help=False,
        owns_flags=True,
    )
    demo.set_defaults(func=_demo_command)
    reset = sub.add_parser(
        "reset-auth",
        help="allow HSS calls again after an authentication failure",
        description=_RESET_DESCRIPTION,
    )
    reset.set_defaults(func=_reset_auth_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.func
    return command(args)


# --- the sub-commands ---


def _simulate_command(args: argparse.Namespace) -> int:
    from bot.sandbox.sim_server import cli_main

    return int(cli_main(args.argv))


def _demo_command(args: argparse.Namespace) -> int:
    from bot.sandbox.demo import main as demo_main

    return int(demo_main(args.argv))


def _query_command(args: argparse.Namespace) -> int:
    try:  # bad usage is reported before configuration, like argparse's own errors
        request = request_from_args(args)
    except CommandError as exc:
        print(f"hss-sync-bot query: {exc.user_message()}", file=sys.stderr)
        return EXIT_USAGE
    return _configured("query", lambda settings: _query(request, settings, as_json=args.json))


def _tasks_command(args: argparse.Namespace) -> int:
    try:  # bad usage is reported before configuration, like argparse's own errors
        query = cli_tasks.query_from_args(args)
    except CommandError as exc:
        print(f"hss-sync-bot tasks: {exc.user_message()}", file=sys.stderr)
        return EXIT_USAGE
    return _configured("tasks", lambda settings: _tasks(query, settings, as_json=args.json))


def _tasks(query: ListTasks, settings: Settings, *, as_json: bool) -> int:
    from bot.runs_service import filter_runs

    async def go() -> RunsSnapshot:
        from bot.hss.budget import asker

        asker.set("cli")
        runtime = await _open_runtime(settings)
        try:
            return await cli_tasks.fetch(runtime, settings.fresh_seconds)
        finally:
            await runtime.aclose()

    try:
        snap = asyncio.run(go())
    except ConfigError:
        raise
    except BotError as exc:
        print(f"hss-sync-bot tasks: {exc.user_message()}", file=sys.stderr)
        return EXIT_ERROR
    runs = filter_runs(snap.runs, kind=query.kind, name=query.name, failed=query.failed)
    return cli_tasks.print_runs(runs, fetched_at=snap.fetched_at, as_json=as_json)


def _run_command(args: argparse.Namespace) -> int:
    return _configured("run", _run)


def _reset_auth_command(args: argparse.Namespace) -> int:
    return _configured("reset-auth", _reset_auth)


def _configured(command: str, work: Callable[[Settings], int]) -> int:
    """``work`` with the settings and logging ``command`` needs; configuration and other
    bot errors become one line on stderr and the exit status."""
    try:
        settings = _settings(command)
        level = settings.log_level or ("INFO" if command == "run" else "WARNING")
        # LOG_LEVEL is obeyed to the letter; by default a one-shot command still says which
        # embedded Redis (and data directory) it used.
        notice = settings.log_level is None
        _configure_logging(level, logs.secret_values(settings), embedded_notice=notice)
        return work(settings)
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


def _configure_logging(
    level: str, secrets: Iterable[str] = (), *, embedded_notice: bool = False
) -> None:
    """JSON lines on stderr (plain text on a terminal), with ``secrets`` masked in every
    line whatever logged them (see ``bot.ops.logs``)."""
    logs.configure(
        level, stream=sys.stderr, secrets=secrets, queued=True, embedded_notice=embedded_notice
    )


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
    from bot.hss.budget import asker

    started = time.monotonic()
    asker.set("cli")  # CLI runs take turns with people in the budget's queue, as one asker
    runtime = await _open_runtime(settings)
    try:
        request = await _resolved(runtime, request)
        question = await runtime.lookups.ask(request, started=started)
        if question.peek.fresh:
            return question.peek.answer
        wait = await runtime.lookups.wait_estimate(request)
        if wait > 1.0:
            print(
                f"Waiting about {wait:.0f} s for an HSS call slot "
                f"(budget {settings.rate_limit} shared by every user of this AK)…",
                file=sys.stderr,
            )
        return await runtime.lookups.follow_up(question)
    finally:
        await runtime.aclose()


async def _resolved(runtime: Runtime, request: LookupRequest) -> LookupRequest:
    """The request for the run a task reference (``latest``...) names; as given otherwise.
    Which run it named goes to stderr, with the data's age."""
    from bot.runs_service import named_run

    # At a terminal the fresh list is worth its wait (up to RESOLVE_WAIT).
    run = await named_run(runtime.runs, request.task_id, patience=None)
    if run is None:
        return request
    said = (
        f"{request.task_id.lower()} is {run.task_name!r} (task id {run.task_id}, "
        f"{run.task_type or 'unknown kind'}, began {run_time(run.begin_time)})"
    )
    print(printable(said), file=sys.stderr)
    return dataclasses.replace(request, task_id=run.task_id)


def _print_answer(answer: Answer, *, as_json: bool) -> int:
    rows = answer.registries
    if as_json:
        dicts = [r.as_api_dict() for r in rows]
        write_stdout(json.dumps(dicts, ensure_ascii=False, indent=2) + "\n")
    else:
        write_stdout(format_table(rows))
    failed = sum(1 for r in rows if r.sync_status == SyncStatus.FAILED.value)
    age = data_age(answer.fetched_at, time.time())
    print(f"{len(rows)} registries, {failed} failed; {age}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
