"""A task's snapshot as the fields of one Redis hash, and change-stream entries as stream
fields, both ways (pure).

The hash: ``meta`` (JSON: generation, views with their fetch times and totals, row and chunk
counts, the task's size) and ``c0..cN``, zlib-compressed JSON chunks of ``CHUNK_ROWS`` rows
each. Compressed chunks keep Redis memory near 40 bytes per registry.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any, cast

from bot.mirror import Change, Row, Snapshot, View, parse_view_key
from bot.models import UNKNOWN_STATUS

CHUNK_ROWS = 5000


def encode_snapshot(snap: Snapshot) -> dict[str, bytes]:
    rows = [_row_list(r) for r in snap.rows.values()]
    chunks = [rows[i : i + CHUNK_ROWS] for i in range(0, len(rows), CHUNK_ROWS)]
    meta = {
        "gen": snap.generation,
        "views": {k: [v.fetched_at, v.total] for k, v in snap.views.items()},
        "rows": len(rows),
        "chunks": len(chunks),
        "total": snap.task_total,
    }
    out = {"meta": json.dumps(meta).encode()}
    for i, chunk in enumerate(chunks):
        out[f"c{i}"] = zlib.compress(json.dumps(chunk, separators=(",", ":")).encode(), 1)
    return out


def _row_list(r: Row) -> list[object]:
    # known_status is stored only when it differs: it usually equals status.
    known = "" if r.known_status == r.status else r.known_status
    return [r.registry_id, r.name, r.type, r.status, r.reason, round(r.seen_at, 3), known]


def decode_meta(raw: object) -> dict[str, Any]:
    if raw is None:
        return {"gen": 0, "views": {}, "chunks": 0}
    meta: dict[str, Any] = json.loads(cast(bytes, raw))
    return meta


def decode_snapshot(fields: Mapping[bytes, bytes]) -> Snapshot:
    meta = decode_meta(fields.get(b"meta"))
    rows: dict[str, Row] = {}
    for i in range(int(meta["chunks"])):
        for rid, name, rtype, status, reason, seen_at, known in json.loads(
            zlib.decompress(fields[f"c{i}".encode()])
        ):
            # "" means "same as status", except that an unknown status never is a known one.
            known = known or (status if status != UNKNOWN_STATUS else "")
            rows[rid] = Row(rid, name, rtype, status, reason, seen_at, known)
    views = {
        k: View(flt=parse_view_key(k), fetched_at=float(at), total=int(total))
        for k, (at, total) in meta["views"].items()
    }
    total = meta.get("total")
    return Snapshot(
        rows=rows,
        views=views,
        generation=int(meta["gen"]),
        task_total=int(total) if total is not None else None,
    )


def change_fields(c: Change) -> dict[str, str]:
    return {
        "id": c.registry_id,
        "name": c.name,
        "type": c.type,
        "old": c.old,
        "new": c.new,
        "reason": c.reason,
        "at": repr(c.at),
    }


def change_of(f: dict[bytes, bytes]) -> Change:
    d = {k.decode(): v.decode() for k, v in f.items()}
    return Change(d["id"], d["name"], d["type"], d["old"], d["new"], d["reason"], float(d["at"]))
