"""Plain-text output for the terminal: the registry table."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from bot.models import Registry

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
    cells = [
        [
            _cell(_printable(v), limit)
            for v, limit in zip(
                (r.sync_status, r.registry_name, r.registry_type, r.registry_id, r.failed_reason),
                _MAX_WIDTH,
                strict=True,
            )
        ]
        for r in rows
    ]
    widths = [max([_width(h)] + [_width(c[i]) for c in cells]) for i, h in enumerate(_COLUMNS)]
    lines = ["  ".join(_pad(h, w) for h, w in zip(_COLUMNS, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines) + "\n"


def _printable(text: str) -> str:
    # Terminal escape sequences from a registry name must not reach the user's terminal.
    return "".join(ch if ch.isprintable() else " " for ch in text)
