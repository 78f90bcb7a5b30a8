"""The pure mirror rules: merging complete fetches, coverage, planning calls, answering."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.mirror import (
    REMOVED,
    Change,
    Row,
    Snapshot,
    View,
    choose_view,
    covering_view,
    covers,
    matching_rows,
    merge,
    parse_view_key,
    row_matches,
    sampled_pages,
    task_size,
    totals,
    view_key,
    with_task_size,
)
from bot.models import (
    REGISTRY_TYPES,
    UNKNOWN_STATUS,
    ApiFilter,
    LookupRequest,
    Registry,
    SyncStatus,
    Totals,
)

T0 = 1_764_000_000.0
FINISHED, RUNNING, FAILED = SyncStatus.FINISHED, SyncStatus.RUNNING, SyncStatus.FAILED
FULL = ApiFilter()
FAILED_VIEW = ApiFilter(sync_status=FAILED)
HARBOR = frozenset({"Harbor"})


def reg(
    rid: str, status: str = "finished", *, name: str = "", rtype: str = "Harbor", reason: str = ""
) -> Registry:
    return Registry(rid, name or f"name-{rid}", rtype, status, reason)


def row(
    rid: str,
    status: str = "finished",
    *,
    name: str = "",
    rtype: str = "Harbor",
    seen_at: float = T0,
    known: str | None = None,
) -> Row:
    known_status = status if known is None else known
    return Row(rid, name or f"name-{rid}", rtype, status, "", seen_at, known_status)


def snap_of(*rows: Row, views: dict[str, View] | None = None, generation: int = 0) -> Snapshot:
    return Snapshot(rows={r.registry_id: r for r in rows}, views=views or {}, generation=generation)


def fetch(
    snap: Snapshot,
    flt: ApiFilter,
    regs: list[Registry],
    *,
    at: float,
    total: int | None = None,
) -> tuple[Snapshot, list[Change]]:
    """One complete fetch that started at ``at`` and took one second."""
    count = len(regs) if total is None else total
    return merge(snap, flt, regs, total=count, started_at=at, finished_at=at + 1)


def statuses(snap: Snapshot) -> dict[str, str]:
    return {rid: r.status for rid, r in snap.rows.items()}


# --- merge ---


def test_first_fetch_is_a_baseline() -> None:
    regs = [reg("a", "finished"), reg("b", "failed", reason="denied"), reg("c", "running")]
    snap, changes = fetch(Snapshot(), FULL, regs, at=T0)
    assert changes == []
    assert statuses(snap) == {"a": "finished", "b": "failed", "c": "running"}
    assert snap.rows["b"] == Row("b", "name-b", "Harbor", "failed", "denied", T0 + 1, "failed")


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        pytest.param("finished", "failed", True, id="finished->failed"),
        pytest.param("failed", "finished", True, id="failed->finished"),
        pytest.param("failed", "running", True, id="failed->running"),
        pytest.param("running", "finished", True, id="running->finished"),
        pytest.param("failed", "failed", False, id="failed-stays-failed"),
        pytest.param("finished", "finished", False, id="finished-stays-finished"),
    ],
)
def test_status_changes_between_full_fetches(old: str, new: str, changed: bool) -> None:
    snap, _ = fetch(Snapshot(), FULL, [reg("a", old), reg("b")], at=T0)
    snap, changes = fetch(snap, FULL, [reg("a", new, reason="r2"), reg("b")], at=T0 + 60)
    expected = [Change("a", "name-a", "Harbor", old, new, "r2", T0 + 61)] if changed else []
    assert changes == expected
    assert snap.rows["a"].status == new


def test_failed_reason_change_alone_is_not_a_status_change() -> None:
    snap, _ = fetch(Snapshot(), FULL, [reg("a", "failed", reason="timeout")], at=T0)
    snap, changes = fetch(snap, FULL, [reg("a", "failed", reason="denied")], at=T0 + 60)
    assert changes == []
    assert snap.rows["a"].reason == "denied"


@pytest.mark.parametrize(
    ("before", "known", "old_in_change"),
    [
        pytest.param("failed", None, "failed", id="failed"),
        pytest.param("finished", None, "finished", id="finished"),
        pytest.param(UNKNOWN_STATUS, "failed", "failed", id="unknown-was-failed"),
    ],
)
def test_missing_from_complete_full_fetch_is_removed(
    before: str, known: str | None, old_in_change: str
) -> None:
    snap = snap_of(row("gone", before, known=known), row("kept"))
    new, changes = fetch(snap, FULL, [reg("kept")], at=T0 + 60)
    assert "gone" not in new.rows
    assert changes == [Change("gone", "name-gone", "Harbor", old_in_change, REMOVED, "", T0 + 61)]
    assert all(c.new != "finished" for c in changes)


def test_missing_from_failed_view_becomes_unknown_then_full_fetch_records_flip() -> None:
    snap, _ = fetch(
        Snapshot(),
        FULL,
        [reg("a", "failed", reason="denied"), reg("b", "failed"), reg("c", "finished")],
        at=T0,
    )
    snap, changes = fetch(snap, FAILED_VIEW, [reg("b", "failed")], at=T0 + 60)
    assert changes == []
    assert snap.rows["a"].status == UNKNOWN_STATUS
    assert snap.rows["a"].known_status == "failed"
    assert snap.rows["a"].reason == ""
    assert snap.rows["c"].status == "finished", "rows outside the view are untouched"

    snap, changes = fetch(
        snap, FULL, [reg("a", "finished"), reg("b", "failed"), reg("c")], at=T0 + 120
    )
    assert changes == [Change("a", "name-a", "Harbor", "failed", "finished", "", T0 + 121)]
    assert snap.rows["a"] == Row("a", "name-a", "Harbor", "finished", "", T0 + 121, "finished")


def test_unknown_row_seen_again_with_its_known_status_is_no_change() -> None:
    snap = snap_of(row("a", UNKNOWN_STATUS, known="failed"))
    snap, changes = fetch(snap, FAILED_VIEW, [reg("a", "failed")], at=T0 + 60)
    assert changes == []
    assert snap.rows["a"].status == "failed"


def test_missing_from_type_view_only_touches_that_type() -> None:
    snap = snap_of(row("h1"), row("h2"), row("j1", rtype="Jfrog"))
    snap, changes = fetch(snap, ApiFilter(registry_types=HARBOR), [reg("h1")], at=T0 + 60)
    assert changes == []
    assert statuses(snap) == {"h1": "finished", "h2": UNKNOWN_STATUS, "j1": "finished"}


def test_registry_without_status_is_unknown_and_not_a_change() -> None:
    snap = snap_of(row("a", "failed"))
    snap, changes = fetch(snap, FULL, [reg("a", "")], at=T0 + 60)
    assert changes == []
    assert snap.rows["a"].status == UNKNOWN_STATUS
    assert snap.rows["a"].known_status == "failed"


def test_rows_seen_by_a_newer_fetch_are_not_overwritten() -> None:
    newer = row("a", "failed", seen_at=T0 + 100)
    also_newer = row("b", "failed", seen_at=T0 + 100)
    old = row("c", "failed", seen_at=T0 - 100)
    snap = snap_of(newer, also_newer, old)
    # Started at T0+50, before the fetch that saw a and b finished: a's row is newer.
    new, changes = fetch(snap, FULL, [reg("a", "finished"), reg("c", "finished")], at=T0 + 50)
    assert new.rows["a"] == newer
    assert new.rows["b"] == also_newer, "absent but newer: neither removed nor unknown"
    assert new.rows["c"].status == "finished"
    assert [c.registry_id for c in changes] == ["c"]


def test_overlapping_fetch_of_the_same_view_keeps_the_newer_age() -> None:
    later, _ = merge(
        Snapshot(),
        FAILED_VIEW,
        [reg("a", "failed")],
        total=1,
        started_at=T0 + 50,
        finished_at=T0 + 52,
    )
    # Started earlier, landed last (a lock expired, or a re-planned narrower fetch).
    older, _ = merge(
        later,
        FAILED_VIEW,
        [reg("a", "failed")],
        total=1,
        started_at=T0 + 40,
        finished_at=T0 + 60,
    )
    assert older.views[view_key(FAILED_VIEW)] == View(FAILED_VIEW, T0 + 50, 1)
    assert older.generation == 2


def test_an_older_fetch_does_not_undo_a_registry_leaving_a_view() -> None:
    snap = snap_of(row("x", "failed"), row("y", "failed"))
    left, _ = merge(
        snap, FAILED_VIEW, [reg("y", "failed")], total=1, started_at=T0 + 50, finished_at=T0 + 52
    )
    assert left.rows["x"].status == UNKNOWN_STATUS
    # A full fetch that started before x left the failed view still saw it failed.
    older, changes = merge(
        left,
        FULL,
        [reg("x", "failed"), reg("y", "failed")],
        total=2,
        started_at=T0 + 40,
        finished_at=T0 + 60,
    )
    assert older.rows["x"] == left.rows["x"]
    assert changes == []


def test_views_generation_and_input_untouched() -> None:
    snap, _ = fetch(Snapshot(), FULL, [reg("a"), reg("b", "failed")], at=T0)
    before = copy.deepcopy(snap)
    new, _ = fetch(snap, FAILED_VIEW, [], at=T0 + 60, total=0)
    assert snap == before, "merge works on a copy"
    assert new.generation == snap.generation + 1 == 2
    assert new.views == {
        view_key(FULL): View(FULL, T0, 2),
        view_key(FAILED_VIEW): View(FAILED_VIEW, T0 + 60, 0),
    }
    again, _ = fetch(new, FAILED_VIEW, [reg("b", "failed")], at=T0 + 120, total=7)
    assert again.views[view_key(FAILED_VIEW)] == View(FAILED_VIEW, T0 + 120, 7)
    assert again.generation == 3


@pytest.mark.parametrize(
    "flt",
    [
        pytest.param(FULL, id="full"),
        pytest.param(FAILED_VIEW, id="status"),
        pytest.param(ApiFilter(FAILED, frozenset({"Jfrog", "Harbor"}), "a|b"), id="all-parts"),
        pytest.param(ApiFilter(registry_name="Prod 1"), id="name"),
    ],
)
def test_view_key_round_trip(flt: ApiFilter) -> None:
    assert parse_view_key(view_key(flt)) == flt


# --- merge: a property ---

_ids = st.sampled_from([f"r{i}" for i in range(12)])
_status = st.sampled_from(["finished", "running", "failed"])
_old_rows = st.dictionaries(
    _ids,
    # (status, known status if unknown: "" when the API never gave one)
    st.tuples(
        st.sampled_from(["finished", "running", "failed", UNKNOWN_STATUS]), _status | st.just("")
    ),
)
_fetched = st.dictionaries(_ids, _status)


@settings(max_examples=300)
@given(before=_old_rows, fetched=_fetched)
def test_full_fetch_replaces_rows_and_reports_only_real_changes(
    before: dict[str, tuple[str, str]], fetched: dict[str, str]
) -> None:
    old_rows = [
        row(rid, status, known=known if status == UNKNOWN_STATUS else status, seen_at=T0 + i)
        for i, (rid, (status, known)) in enumerate(before.items())
    ]
    snap = snap_of(*old_rows)
    regs = [reg(rid, status) for rid, status in fetched.items()]
    new, changes = fetch(snap, FULL, regs, at=T0 + 1000)

    assert {rid: r.as_registry() for rid, r in new.rows.items()} == {r.registry_id: r for r in regs}
    expected: dict[str, tuple[str, str]] = {}
    for r in old_rows:
        if r.registry_id not in fetched:
            expected[r.registry_id] = (r.known_status or r.status, REMOVED)
        elif r.known_status and r.known_status != fetched[r.registry_id]:
            expected[r.registry_id] = (r.known_status, fetched[r.registry_id])
    assert {c.registry_id: (c.old, c.new) for c in changes} == expected
    assert len(changes) == len(expected)


# --- coverage ---


def _f(
    status: SyncStatus | None = None, types: frozenset[str] = frozenset(), name: str | None = None
) -> ApiFilter:
    return ApiFilter(sync_status=status, registry_types=types, registry_name=name)


HJ = frozenset({"Harbor", "Jfrog"})


@pytest.mark.parametrize(
    ("view", "query", "expected"),
    [
        pytest.param(FULL, FULL, True, id="full-covers-full"),
        pytest.param(FULL, _f(FAILED, HJ, "prod"), True, id="full-covers-anything"),
        pytest.param(FAILED_VIEW, FAILED_VIEW, True, id="status-covers-same"),
        pytest.param(FAILED_VIEW, _f(FAILED, HARBOR), True, id="status-covers-status+type"),
        pytest.param(FAILED_VIEW, _f(FAILED, name="x"), True, id="status-covers-status+name"),
        pytest.param(FAILED_VIEW, _f(RUNNING), False, id="status-not-other-status"),
        pytest.param(FAILED_VIEW, FULL, False, id="status-not-full"),
        pytest.param(FAILED_VIEW, _f(types=HARBOR), False, id="status-not-type-only"),
        pytest.param(_f(types=HJ), _f(types=HARBOR), True, id="types-cover-subset"),
        pytest.param(_f(types=HJ), _f(types=HJ), True, id="types-cover-same"),
        pytest.param(_f(types=HJ), _f(FAILED, HARBOR, "p"), True, id="types-cover-narrower"),
        pytest.param(_f(types=HARBOR), _f(types=HJ), False, id="types-not-superset"),
        pytest.param(_f(types=HARBOR), FULL, False, id="types-not-all-types"),
        pytest.param(_f(types=HARBOR), FAILED_VIEW, False, id="types-not-status-all-types"),
        pytest.param(_f(name="prod"), _f(name="prod"), True, id="name-covers-same"),
        pytest.param(_f(name="prod"), _f(name="harbor-PROD-1"), True, id="name-covers-longer"),
        pytest.param(_f(name="Prod"), _f(name="pROD"), True, id="name-case-insensitive"),
        pytest.param(_f(name="prod"), _f(FAILED, HARBOR, "prod"), True, id="name-covers-narrower"),
        pytest.param(_f(name="prod"), _f(name="pro"), False, id="name-not-shorter"),
        pytest.param(_f(name="prod"), _f(name="harbor"), False, id="name-not-other"),
        pytest.param(_f(name="prod"), FULL, False, id="name-not-no-name"),
        pytest.param(_f(FAILED, HARBOR), _f(FAILED, HARBOR, "x"), True, id="combo-covers-narrower"),
        pytest.param(_f(FAILED, HARBOR), FAILED_VIEW, False, id="combo-not-status-only"),
    ],
)
def test_covers(view: ApiFilter, query: ApiFilter, expected: bool) -> None:
    assert covers(view, query) is expected


_names = st.text(alphabet="aAbB-", max_size=4)
_filters = st.builds(
    ApiFilter,
    sync_status=st.none() | st.sampled_from(list(SyncStatus)),
    registry_types=st.frozensets(st.sampled_from(REGISTRY_TYPES[:3]), max_size=2),
    registry_name=st.none() | _names.filter(bool),
)
_rows = st.builds(
    Row,
    registry_id=st.just("r"),
    name=_names,
    type=st.sampled_from(REGISTRY_TYPES[:3]),
    status=st.sampled_from([*SyncStatus, UNKNOWN_STATUS]),
    reason=st.just(""),
    seen_at=st.just(T0),
)


@given(view=_filters, query=_filters, r=_rows)
def test_covers_means_every_query_match_is_a_view_match(
    view: ApiFilter, query: ApiFilter, r: Row
) -> None:
    if covers(view, query) and row_matches(query, r):
        assert row_matches(view, r)


def test_covering_view_picks_the_freshest() -> None:
    views = {
        view_key(f): View(f, at, 1)
        for f, at in [(FULL, T0), (FAILED_VIEW, T0 + 10), (_f(types=HARBOR), T0 + 20)]
    }
    snap = Snapshot(views=views)
    assert covering_view(snap, _f(FAILED, HARBOR)) == View(_f(types=HARBOR), T0 + 20, 1)
    assert covering_view(snap, FAILED_VIEW) == View(FAILED_VIEW, T0 + 10, 1)
    assert covering_view(snap, _f(RUNNING)) == View(FULL, T0, 1)
    assert (
        covering_view(
            Snapshot(views={view_key(FAILED_VIEW): views[view_key(FAILED_VIEW)]}), _f(RUNNING)
        )
        is None
    )


# --- planning ---


def big_task(*, size: int = 10_000, failed: int = 30, failed_harbor: int = 10) -> Snapshot:
    """A task whose full view was fetched: ``failed`` failed rows, ``failed_harbor`` of them
    Harbor; every other row is a finished Jfrog, except 2,000 finished Harbor."""
    regs: list[Registry] = []
    for i in range(size):
        status = "failed" if i < failed else "finished"
        harbor = i < failed_harbor or failed <= i < failed + 2000
        regs.append(
            reg(
                f"{i:032x}",
                status,
                name=f"harbor-prod-{i:05d}",
                rtype="Harbor" if harbor else "Jfrog",
            )
        )
    snap, _ = fetch(Snapshot(), FULL, regs, at=T0)
    return snap


@pytest.fixture(scope="module")
def big() -> Snapshot:
    return big_task()


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(FULL, id="everything"),
        pytest.param(FAILED_VIEW, id="failed"),
        pytest.param(_f(FAILED, HARBOR, "prod"), id="failed+type+name"),
        pytest.param(_f(name="prod"), id="name"),
    ],
)
def test_unknown_size_fetches_everything(query: ApiFilter) -> None:
    assert choose_view(Snapshot(), query) == FULL


@pytest.mark.parametrize("size", [1, 150, 200])
@pytest.mark.parametrize(
    "query",
    [
        pytest.param(FAILED_VIEW, id="failed"),
        pytest.param(_f(FAILED, HARBOR), id="failed+type"),
        pytest.param(_f(name="prod"), id="name"),
    ],
)
def test_small_task_is_always_fetched_whole(size: int, query: ApiFilter) -> None:
    snap = Snapshot(views={view_key(FULL): View(FULL, T0, size)})
    assert choose_view(snap, query) == FULL
    assert choose_view(Snapshot(), query, size_hint=size) == FULL


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(FULL, FULL, id="everything->full"),
        pytest.param(FAILED_VIEW, FAILED_VIEW, id="failed->status-view"),
        pytest.param(_f(FAILED, HARBOR), FAILED_VIEW, id="failed+Harbor->status-view(tie)"),
        pytest.param(_f(types=HARBOR), _f(types=HARBOR), id="Harbor->exact(10<50-pages)"),
        pytest.param(_f(name="prod-0004"), _f(name="prod-0004"), id="name->exact"),
        pytest.param(_f(RUNNING), _f(RUNNING), id="running(none)->status-view"),
    ],
)
def test_big_task_plans_the_cheapest_view(
    big: Snapshot, query: ApiFilter, expected: ApiFilter
) -> None:
    assert task_size(big) == 10_000
    assert choose_view(big, query) == expected


def test_exact_view_wins_when_cheaper_than_status_view() -> None:
    snap = big_task(size=2_000, failed=500, failed_harbor=100)
    assert choose_view(snap, _f(FAILED, HARBOR)) == _f(FAILED, HARBOR)
    assert choose_view(snap, FAILED_VIEW) == FAILED_VIEW


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(_f(name="prod"), _f(name="prod"), id="name->exact"),
        pytest.param(FAILED_VIEW, FAILED_VIEW, id="failed->status-view"),
        pytest.param(_f(FAILED, HARBOR), FAILED_VIEW, id="failed+Harbor->status-view(tie)"),
        pytest.param(FULL, FULL, id="everything->full"),
    ],
)
def test_big_task_without_covering_data_uses_size_hint(
    query: ApiFilter, expected: ApiFilter
) -> None:
    # The caller's first full page said 10,000 registries; nothing is known about the rest.
    assert choose_view(Snapshot(), query, size_hint=10_000) == expected


def test_size_hint_overrides_the_stored_size() -> None:
    small = snap_of(row("a", "failed"), row("b"), views={view_key(FULL): View(FULL, T0, 2)})
    assert choose_view(small, FAILED_VIEW) == FULL
    assert choose_view(small, FAILED_VIEW, size_hint=10_000) == FAILED_VIEW


# --- answering ---


def test_totals_unknown_without_covering_view() -> None:
    snap = snap_of(
        row("a", "failed"), row("b"), views={view_key(_f(name="x")): View(_f(name="x"), T0, 2)}
    )
    assert totals(Snapshot()) == Totals(None, None, None, 0)
    assert totals(snap) == Totals(None, None, None, 0)
    assert totals(snap).total is None


def test_totals_with_status_view_only_know_that_status() -> None:
    snap, _ = fetch(Snapshot(), FAILED_VIEW, [reg("a", "failed"), reg("b", "failed")], at=T0)
    assert totals(snap) == Totals(finished=None, running=None, failed=2, unknown=0)
    assert totals(snap).total is None


def test_totals_with_full_view_count_everything_including_unknown() -> None:
    regs = [reg("a", "failed"), reg("b", "failed"), reg("c", "running"), reg("d"), reg("e")]
    snap, _ = fetch(Snapshot(), FULL, regs, at=T0)
    assert totals(snap) == Totals(finished=2, running=1, failed=2, unknown=0, size=5)
    snap, _ = fetch(snap, FAILED_VIEW, [reg("a", "failed")], at=T0 + 60)
    result = totals(snap)
    assert result == Totals(finished=2, running=1, failed=1, unknown=1, size=5)
    assert result.total == 5


def test_matching_rows_order_and_filter() -> None:
    snap = snap_of(
        row("1", "finished", name="alpha"),
        row("2", "failed", name="zulu"),
        row("3", UNKNOWN_STATUS, name="bravo", known="failed"),
        row("4", "running", name="Mike"),
        row("5", "failed", name="Alpha"),
        row("6", "running", name="charlie"),
        row("7", "failed", name="alpha"),
        row("8", "finished", name="Bravo", rtype="Jfrog"),
    )
    everything = matching_rows(snap, LookupRequest(task_id="t"))
    assert [r.registry_id for r in everything] == ["5", "7", "2", "6", "4", "3", "1", "8"]
    failed = matching_rows(snap, LookupRequest(task_id="t", status=FAILED))
    assert [r.registry_id for r in failed] == ["5", "7", "2"]
    harbor_b = matching_rows(snap, LookupRequest(task_id="t", types=HARBOR, name="B"))
    assert [r.registry_id for r in harbor_b] == ["3"]


def test_a_first_page_estimates_the_pages_of_a_view() -> None:
    # 200 registries seen of 2,000: 10 failed (5 %) -> about 100 failed, one page; 120
    # finished (60 %) -> about 1,200, six pages; the whole task ten.
    sample = [reg(f"f{i}", "failed") for i in range(10)]
    sample += [reg(f"d{i}", "finished") for i in range(120)]
    sample += [reg(f"r{i}", "running") for i in range(70)]
    assert sampled_pages(sample, 2000, FAILED_VIEW) == 1
    assert sampled_pages(sample, 2000, ApiFilter(sync_status=FINISHED)) == 6
    assert sampled_pages(sample, 2000, FULL) == 10
    assert sampled_pages([], 2000, FAILED_VIEW) == 10, "no sample: as big as the task"


def test_the_task_size_alone_changes_no_view_or_row() -> None:
    snap = Snapshot(rows={"a": row("a")}, views={}, generation=3)
    sized = with_task_size(snap, 450)
    assert (sized.task_total, sized.generation) == (450, 4)
    assert sized.rows == snap.rows and sized.views == snap.views
    assert task_size(snap) is None, "the original is unchanged"
