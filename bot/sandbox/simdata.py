"""Deterministic registry data for the HSS simulator: pure, compact and fast to filter.

Every task's rows come from ``sha256(seed, task_id)``, so two simulators with the same seed
serve identical data. A task keeps only two aligned arrays in display order:

* ``codes``: one byte per row, ``status << 3 | type`` (filters become one ``bytes.translate``)
* ``serials``: the row's stable identity; id, name and failure reason derive from it on demand

so a 100,000-registry task costs about 500 kB, and a page is served in a few milliseconds.
A fixed-width buffer of lower-cased names is built lazily for ``registry_name`` filters.

``registry_name`` filtering is a case-insensitive substring match (our reading of the API).
"""

from __future__ import annotations

import hashlib
import random
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from bot.models import (
    EP_ID_MAX,
    OFFSET_MAX,
    PAGE_LIMIT_MAX,
    PAGE_LIMIT_MIN,
    REGISTRY_NAME_MAX,
    REGISTRY_TYPES,
    Registry,
)

STATUSES: tuple[str, ...] = ("finished", "running", "failed")
FINISHED, RUNNING, FAILED = range(3)

#: Bytes per name in the search buffer; names are cut to NAME_WIDTH - 1 so that a NUL always
#: separates two rows and a match can never span them.
NAME_WIDTH = 48
_CHUNK = 4096

_TYPE_SLUGS = ("swr", "swr-shared", "swr-ee", "harbor", "jfrog", "registry")
_ENVS = ("prod", "staging", "dev", "qa", "cn-east", "ap-sg")

FAILURE_REASONS: tuple[str, ...] = (
    "connection timed out after 30s",
    "镜像同步失败: 权限不足",
    "HSS lacks the SWROperatePolicy agency permission",
    "image pull failed: manifest unknown for <library/nginx:1.25>",
    "401 Unauthorized & token expired",
    "仓库连接失败: 网络不可达 (network unreachable)",
    "TLS handshake failed: x509: certificate signed by unknown authority",
    "quota exceeded: used > 95% of 500 GB",
)
#: Only with ``hostile=True``: text that breaks naive Slack rendering.
HOSTILE_REASONS: tuple[str, ...] = (
    "connection refused: <https://evil.example|click>",
    "<!channel> sync failed, everyone look",
    "<@U024BE7LH> please check & fix *now*",
    "`rm -rf /` &lt;already escaped&gt; & raw <b>bold</b>",
)
HOSTILE_NAMES: tuple[str, ...] = (
    "<!channel>",
    "<@U024BE7LH> prod",
    "*bold* & _italic_ ~strike~",
    "仓库-生产 <b>&amp;</b>",
    "<https://evil.example|harbor-prod>",
)


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()


def seeded_rng(*parts: object) -> random.Random:
    """A ``Random`` that depends only on ``parts`` (never on process hash randomisation)."""
    return random.Random(int.from_bytes(_digest(*parts)[:8], "big"))


def _code_table() -> bytes:
    """Random byte -> row code: about 80% finished, 10% running, 10% failed; all six types."""
    table = bytearray(256)
    for b in range(256):
        status = FINISHED if b < 205 else RUNNING if b < 231 else FAILED
        table[b] = status << 3 | b % len(REGISTRY_TYPES)
    return bytes(table)


_RANDOM_TO_CODE = _code_table()


def random_codes(rng: random.Random, count: int) -> bytes:
    return rng.randbytes(count).translate(_RANDOM_TO_CODE)


def _with_status(status: int) -> bytes:
    """A ``bytes.translate`` table giving every row code ``status``, keeping its type."""
    return bytes(status << 3 | code & 7 for code in range(256))


def match_table(statuses: Iterable[int], types: Iterable[int]) -> bytes:
    """A ``bytes.translate`` table mapping a row code to 1 when it passes both filters."""
    wanted = {s << 3 | t for s in statuses for t in types}
    return bytes(1 if code in wanted else 0 for code in range(256))


@dataclass(frozen=True, slots=True)
class Query:
    """One validated ListAssociateRegistries query."""

    offset: int = 0
    limit: int = PAGE_LIMIT_MIN
    sync_status: str | None = None
    registry_types: frozenset[str] = frozenset()
    registry_name: str | None = None
    enterprise_project_id: str = "0"

    def table(self) -> bytes:
        statuses = [STATUSES.index(self.sync_status)] if self.sync_status else range(3)
        types = [REGISTRY_TYPES.index(t) for t in self.registry_types] or range(6)
        return match_table(statuses, types)


class InvalidParameter(ValueError):
    """A query parameter breaks the API's rules (HSS.0001)."""


def int_param(name: str, raw: str, low: int, high: int) -> int:
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidParameter(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def text_param(name: str, raw: str, maximum: int) -> str:
    if not 1 <= len(raw) <= maximum:
        raise InvalidParameter(f"{name} must be 1-{maximum} characters")
    return raw


def _types_param(raw: str) -> frozenset[str]:
    types = frozenset(raw.split(","))
    unknown = sorted(types - set(REGISTRY_TYPES))
    if unknown:
        raise InvalidParameter(f"registry_type has unknown values: {', '.join(unknown)}")
    return types


def unique_params(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The pairs as a dict; a parameter given twice is invalid."""
    seen: dict[str, str] = {}
    for key, value in pairs:
        if key in seen:
            raise InvalidParameter(f"{key} is given more than once")
        seen[key] = value
    return seen


def parse_query(pairs: Sequence[tuple[str, str]]) -> Query:
    """Validate decoded query pairs as HSS does; unknown parameters are ignored."""
    seen = unique_params(pairs)
    status = seen.get("sync_status")
    if status is not None and status not in STATUSES:
        raise InvalidParameter("sync_status must be finished, running or failed")
    name = seen.get("registry_name")
    return Query(
        offset=int_param("offset", seen.get("offset", "0"), 0, OFFSET_MAX),
        limit=int_param("limit", seen.get("limit", "10"), PAGE_LIMIT_MIN, PAGE_LIMIT_MAX),
        sync_status=status,
        registry_types=_types_param(seen["registry_type"])
        if "registry_type" in seen
        else frozenset(),
        registry_name=text_param("registry_name", name, REGISTRY_NAME_MAX) if name else name,
        enterprise_project_id=text_param(
            "enterprise_project_id", seen.get("enterprise_project_id", "0"), EP_ID_MAX
        ),
    )


def _fit_name(name: str) -> bytes:
    raw = name.lower().encode()
    while len(raw) >= NAME_WIDTH:
        name = name[:-1]
        raw = name.lower().encode()
    return raw.ljust(NAME_WIDTH, b"\0")


def _ones(mask: bytes | bytearray, skip: int, take: int) -> Iterator[int]:
    """Positions of the 1-bytes in ``mask`` after skipping ``skip`` of them; C-speed skipping."""
    pos = 0
    while pos < len(mask) and skip >= (here := mask.count(1, pos, pos + _CHUNK)):
        skip, pos = skip - here, pos + _CHUNK
    while take > 0:
        pos = mask.find(1, pos)
        if pos < 0:
            return
        if skip:
            skip -= 1
        else:
            take -= 1
            yield pos
        pos += 1


class TaskData:
    """The registries of one task; mutations model a running sync (flips, inserts, removals).

    ``identity`` (default: the task id) seeds the registries' ids, names, types and failure
    reasons: tasks with the same identity sync the same registries (a project's sync runs).
    ``status``: every registry starts with it instead of the seeded mix."""

    def __init__(
        self,
        *,
        seed: int,
        task_id: str,
        size: int,
        hostile: bool = False,
        identity: str | None = None,
        status: str | None = None,
    ) -> None:
        self.task_id = task_id
        self._seed = seed
        self._key = task_id if identity is None else identity
        self._hostile = hostile
        codes = random_codes(seeded_rng(seed, self._key, "codes"), size)
        if status is not None:
            codes = codes.translate(_with_status(STATUSES.index(status)))
        self._codes = bytearray(codes)
        self._serials = array("I", range(size))
        self._next_serial = size
        self._reasons: dict[int, str] = {}
        self._names: bytes | None = None
        # Ids end in the serial xor a per-task mask so that an id maps back to its row in O(1).
        self._id_mask = int.from_bytes(_digest(seed, self._key, "mask")[:4], "big")

    def __len__(self) -> int:
        return len(self._codes)

    def registry_id(self, serial: int) -> str:
        return _digest(self._seed, self._key, serial)[:12].hex() + f"{serial ^ self._id_mask:08x}"

    def name(self, serial: int, type_index: int) -> str:
        if self._hostile and serial % 37 == 5:
            return HOSTILE_NAMES[serial // 37 % len(HOSTILE_NAMES)]
        # A multiplicative hash, not sha256: the name buffer builds 100,000 names at once.
        mixed = (serial ^ self._id_mask) * 0x9E3779B1 & 0xFFFFFFFF
        env = _ENVS[(mixed >> 16) % len(_ENVS)]
        return f"{_TYPE_SLUGS[type_index]}-{env}-{serial:05d}"

    def _reason(self, serial: int) -> str:
        if serial in self._reasons:
            return self._reasons[serial]
        pool = FAILURE_REASONS + (HOSTILE_REASONS if self._hostile else ())
        return pool[_digest(self._seed, self._key, serial, "why")[0] % len(pool)]

    def registry_at(self, row: int) -> Registry:
        serial, code = self._serials[row], self._codes[row]
        status = code >> 3
        return Registry(
            registry_id=self.registry_id(serial),
            registry_name=self.name(serial, code & 7),
            registry_type=REGISTRY_TYPES[code & 7],
            sync_status=STATUSES[status],
            failed_reason=self._reason(serial) if status == FAILED else "",
        )

    def registries(self) -> list[Registry]:
        return [self.registry_at(row) for row in range(len(self))]

    def row_of(self, registry_id: str) -> int | None:
        try:
            serial = int(registry_id[24:], 16) ^ self._id_mask
        except ValueError:
            return None
        if len(registry_id) != 32 or self.registry_id(serial) != registry_id:
            return None
        if serial < len(self._serials) and self._serials[serial] == serial:
            return serial  # the common case: no inserts/removals before this row
        try:
            return self._serials.index(serial)
        except ValueError:
            return None

    def count(self, status: str) -> int:
        """Registries with ``status`` now."""
        return self._codes.translate(match_table([STATUSES.index(status)], range(6))).count(1)

    def query(self, query: Query) -> tuple[int, list[Registry]]:
        """(total_num, page) for a query, like the API: total counts every match."""
        mask = self._codes.translate(query.table())
        if query.registry_name is None:
            rows = list(_ones(mask, query.offset, query.limit))
            return mask.count(1), [self.registry_at(r) for r in rows]
        matches = [r for r in self._rows_named(query.registry_name) if mask[r]]
        page = matches[query.offset : query.offset + query.limit]
        return len(matches), [self.registry_at(r) for r in page]

    def _rows_named(self, needle: str) -> Iterator[int]:
        key = needle.lower().encode()
        if b"\0" in key or len(key) >= NAME_WIDTH:
            return
        if self._names is None:
            self._names = b"".join(
                _fit_name(self.name(s, c & 7))
                for s, c in zip(self._serials, self._codes, strict=True)
            )
        pos = self._names.find(key)
        while pos >= 0:
            row = pos // NAME_WIDTH
            yield row
            pos = self._names.find(key, (row + 1) * NAME_WIDTH)

    def set_status(self, row: int, status: str, reason: str | None = None) -> Registry:
        self._codes[row] = STATUSES.index(status) << 3 | self._codes[row] & 7
        serial = self._serials[row]
        if reason is None:
            self._reasons.pop(serial, None)
        else:
            self._reasons[serial] = reason
        return self.registry_at(row)

    def flip_random(self, count: int, rng: random.Random) -> list[Registry]:
        """Move ``count`` distinct random rows to a different status."""
        rows = rng.sample(range(len(self)), min(count, len(self)))
        flipped = []
        for row in rows:
            others = [s for s in STATUSES if s != STATUSES[self._codes[row] >> 3]]
            flipped.append(self.set_status(row, rng.choice(others)))
        return flipped

    def insert(self, count: int, at: int = 0) -> list[Registry]:
        """New registries appear at row ``at``; later rows shift down a page boundary."""
        at = max(0, min(at, len(self)))
        first = self._next_serial
        self._next_serial += count
        self._codes[at:at] = random_codes(seeded_rng(self._seed, self._key, "new", first), count)
        self._serials[at:at] = array("I", range(first, first + count))
        self._names = None
        return [self.registry_at(r) for r in range(at, at + count)]

    def remove(self, count: int, at: int = 0) -> list[Registry]:
        """Registries at rows ``at``.. disappear; later rows shift up."""
        at = max(0, min(at, len(self)))
        gone = [self.registry_at(r) for r in range(at, min(at + count, len(self)))]
        del self._codes[at : at + count]
        del self._serials[at : at + count]
        self._names = None
        return gone
