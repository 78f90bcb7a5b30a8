"""Plain-text output for the terminal: the registry table and the run table."""

from __future__ import annotations

import os
import sys
import time
import unicodedata
from collections.abc import Sequence

from bot.models import Registry
from bot.runs import SyncRun

_COLUMNS = ("STATUS", "NAME", "TYPE", "REGISTRY ID", "FAILED REASON")
_MAX_WIDTH = (9, 40, 13, 36, 80)


def _width(text: str) -> int:
    # East Asian wide characters take two terminal cells.
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _cell(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    if _width(flat) <= limit:
        return flat
    out, used = [], 0
    for ch in flat:
        w = _width(ch)
        if used + w > limit - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def format_table(rows: Sequence[Registry]) -> str:
    """A fixed-width table; control characters and newlines from the API are flattened."""
    values = [
        (r.sync_status, r.registry_name, r.registry_type, r.registry_id, r.failed_reason)
        for r in rows
    ]
    return _table(_COLUMNS, _MAX_WIDTH, values)


_RUN_COLUMNS = ("TASK ID", "NAME", "KIND", "BEGIN", "END", "STATUS", "FAILED", "DONE", "TOTAL")
_RUN_MAX_WIDTH = (36, 40, 10, 20, 20, 14, 6, 6, 6)


def run_time(ms: int | None) -> str:
    """A run's time (ms since the epoch) in UTC; ``-`` without one."""
    if not ms or not 0 < ms < 4e13:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def format_runs(runs: Sequence[SyncRun]) -> str:
    """The run table, as :func:`format_table` (DONE: ``success_num``)."""
    values = [
        (
            run.task_id,
            run.task_name,
            run.task_type,
            run_time(run.begin_time),
            run_time(run.end_time) if run.ended else "-",
            run.outcome,
            str(run.failed_num),
            str(run.success_num),
            str(run.total_num),
        )
        for run in runs
    ]
    return _table(_RUN_COLUMNS, _RUN_MAX_WIDTH, values)


def _table(columns: Sequence[str], limits: Sequence[int], values: Sequence[Sequence[str]]) -> str:
    cells = [
        [_cell(printable(v), limit) for v, limit in zip(row, limits, strict=True)] for row in values
    ]
    widths = [max([_width(h)] + [_width(c[i]) for c in cells]) for i, h in enumerate(columns)]
    lines = ["  ".join(_pad(h, w) for h, w in zip(columns, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines) + "\n"


def printable(text: str) -> str:
    # Terminal escape sequences from a registry name must not reach the user's terminal.
    return "".join(ch if ch.isprintable() else " " for ch in text)


def write_stdout(text: str) -> None:
    """``text`` to stdout, flushed; a reader that left (``| head``) is no error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at devnull so the flush at exit stays quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
