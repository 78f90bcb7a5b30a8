"""``hss-sync-bot tasks``: the sync runs, newest first, from the runs' snapshot when it is
fresh, else after one list call within the shared budget (``bot.cli`` runs it).

Filters are the slash command's (:mod:`bot.slack.tasks_command`), applied to the one list,
so ``--type``, ``--name`` and ``--failed`` cost no calls of their own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from bot.runs import API_FIELDS, SyncRun
from bot.slack.tasks_command import ListTasks, parse_kind, validate_run_name
from bot.slack.text import data_age
from bot.table import format_runs, write_stdout

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from bot.storage.runs_store import RunsSnapshot

EXIT_OK, EXIT_FAILED = 0, 3

DESCRIPTION = """\
List the image-sync runs (ListImageScanTask, type=image_sync) newest first, as a table (or
JSON): from the bot's list of runs when it is fresh, else from HSS with one call of the
run list's own budget. Shows the newest 200 runs HSS lists; the filters apply to them."""

EPILOG = """\
exit status:
  0  no listed run has failures
  3  some listed run has failures (failed_num > 0)
  2  bad usage or configuration (each problem on stderr, naming its variable)
  1  HSS, Redis or the network failed, or HSS refuses the run list (the reason on stderr)

environment (the bot's settings; see the README's Configuration):
  CLOUD_SDK_AK, CLOUD_SDK_SK   the access key pair (required)
  HSS_PROJECT_ID               project id of the HSS region (required)
  HSS_REGION or HSS_ENDPOINT   where HSS is (one of them required)
  CLOUD_SDK_SECURITY_TOKEN     for temporary credentials
  HSS_ENTERPRISE_PROJECT_ID    the enterprise project whose runs are listed
  REDIS_URL                    share the bot's list of runs and call budget (default: an
                               embedded Redis in HSS_DATA_DIR, .hss-sync-bot)
  HSS_TASKS_RATE_LIMIT         the run list's call budget (default 5/60s)
  HSS_FRESH_SECONDS            answer from a list younger than this (default 60)
  LOG_LEVEL                    log level on stderr (default WARNING)

The data's age goes to stderr; the runs to stdout."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--type",
        dest="kind",
        help="auto (scheduled, autoSync) or manual (manualSync) runs only (default: both)",
    )
    parser.add_argument(
        "--name", help="runs whose name contains NAME, in any case (default: any name)"
    )
    parser.add_argument(
        "--failed", action="store_true", help="only runs with failures (default: every run)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array with the API's field names (default: a table)",
    )


def query_from_args(args: argparse.Namespace) -> ListTasks:
    """Validate like the slash command does; raises CommandError."""
    return ListTasks(
        kind=parse_kind(args.kind) if args.kind is not None else None,
        name=validate_run_name(args.name) if args.name is not None else None,
        failed=bool(args.failed),
    )


async def fetch(runtime: Runtime, fresh_seconds: float) -> RunsSnapshot:
    """The list younger than ``fresh_seconds``, fetched if the stored one is older."""
    from bot.hss.budget import Priority

    snap = await runtime.runs.peek()
    if snap is not None and runtime.runs.age(snap) < fresh_seconds:
        return snap
    return await runtime.runs.refresh(priority=Priority.INTERACTIVE, max_age=fresh_seconds)


def print_runs(runs: tuple[SyncRun, ...], *, fetched_at: float, as_json: bool) -> int:
    if as_json:
        rows = [{k: getattr(run, k) for k in API_FIELDS} for run in runs]
        write_stdout(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    else:
        write_stdout(format_runs(runs))
    failing = sum(1 for run in runs if run.failed_num)
    age = data_age(fetched_at, time.time())
    print(f"{len(runs)} runs, {failing} with failures; {age}", file=sys.stderr)
    return EXIT_FAILED if failing else EXIT_OK
