"""Flip detection as pure functions: the rule table, watch filters, flapping, grouping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.alerting.flips import (
    FLAP_WINDOW,
    AlertPlan,
    Flip,
    FlipKind,
    Incident,
    accumulate,
    classify,
    group_by_reason,
    update_history,
)
from bot.mirror import REMOVED, Change
from bot.models import REGISTRY_TYPES, UNKNOWN_STATUS

NOW = 1_764_000_000.0
FAILURE, RECOVERY, RETRY, GONE = (
    FlipKind.FAILURE,
    FlipKind.RECOVERY,
    FlipKind.RETRY,
    FlipKind.REMOVED,
)


def change(
    old: str,
    new: str,
    rid: str = "r1",
    *,
    name: str = "",
    rtype: str = "Harbor",
    reason: str = "",
    at: float = NOW,
) -> Change:
    return Change(rid, name or f"name-{rid}", rtype, old, new, reason, at)


def kinds(plan: AlertPlan) -> dict[str, list[str]]:
    found = {
        "failures": plan.failures,
        "recoveries": plan.recoveries,
        "retries": plan.retries,
        "removed": plan.removed,
        "flapping": plan.flapping,
    }
    return {k: [f.registry_id for f in v] for k, v in found.items() if v}


# --- the rule table --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("running", "failed", "failures"),
        ("finished", "failed", "failures"),
        ("failed", "finished", "recoveries"),
        ("failed", "running", "retries"),
        ("failed", REMOVED, "removed"),
        ("running", REMOVED, "removed"),
        ("finished", REMOVED, "removed"),
        (UNKNOWN_STATUS, REMOVED, "removed"),
        ("running", "finished", None),
        ("finished", "running", None),
        (UNKNOWN_STATUS, "failed", None),
        ("pending", "failed", None),
        ("failed", "pending", None),
        ("failed", "failed", None),
    ],
    ids=lambda v: str(v),
)
def test_transition(old: str, new: str, expected: str | None) -> None:
    plan = classify([change(old, new)], now=NOW)
    assert kinds(plan) == ({expected: ["r1"]} if expected else {})
    assert plan.needs_alert == (expected == "failures")
    assert plan.is_empty == (expected is None)


def test_flip_carries_what_the_change_said() -> None:
    plan = classify([change("running", "failed", reason="auth <!here>", at=NOW - 5)], now=NOW)
    assert plan.failures == (
        Flip(FAILURE, "r1", "name-r1", "Harbor", "auth <!here>", NOW - 5, old="running"),
    )


@pytest.mark.parametrize(
    ("retrying", "expected"),
    [(frozenset({"r1"}), "recoveries"), (frozenset(), None), (frozenset({"r2"}), None)],
    ids=["retried-then-finished-recovers", "plain-running-finished", "other-registry-retrying"],
)
def test_a_retry_that_finishes_is_a_recovery(
    retrying: frozenset[str], expected: str | None
) -> None:
    plan = classify([change("running", "finished")], retrying=retrying, now=NOW)
    assert kinds(plan) == ({expected: ["r1"]} if expected else {})


# --- watch filters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("types", "name", "matches"),
    [
        (frozenset(), None, True),
        (frozenset({"Harbor"}), None, True),
        (frozenset({"Harbor", "Jfrog"}), None, True),
        (frozenset({"Jfrog"}), None, False),
        (frozenset(), "prod", True),
        (frozenset(), "PROD", True),
        (frozenset(), "Harbor-Prod-EU", True),
        (frozenset(), "staging", False),
        (frozenset({"Harbor"}), "prod", True),
        (frozenset({"Jfrog"}), "prod", False),
        (frozenset({"Harbor"}), "staging", False),
    ],
    ids=[
        "no-filter",
        "type",
        "one-of-types",
        "other-type",
        "name-substring",
        "name-case-insensitive",
        "whole-name",
        "other-name",
        "type-and-name",
        "name-but-other-type",
        "type-but-other-name",
    ],
)
def test_watch_filters(types: frozenset[str], name: str | None, matches: bool) -> None:
    changes = [
        change("running", "failed", name="harbor-prod-eu"),
        change("failed", "finished", name="harbor-prod-eu"),
        change("failed", REMOVED, name="harbor-prod-eu"),
    ]
    plan = classify(changes, types=types, name=name, now=NOW)
    assert plan.is_empty != matches


# --- flapping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("earlier", "flapping"),
    [
        ([], False),
        ([NOW - 60], False),
        ([NOW - 120, NOW - 60], False),
        ([NOW - 180, NOW - 120, NOW - 60], True),
        ([NOW - 3599, NOW - 120, NOW - 60], True),
        ([NOW - FLAP_WINDOW, NOW - 120, NOW - 60], False),
        ([NOW - 7200, NOW - 5000, NOW - 4000, NOW - 60], False),
        ([NOW - 9, NOW - 8, NOW - 7, NOW - 6, NOW - 5], True),
        ([NOW + 5, NOW - 120, NOW - 60], True),
    ],
    ids=[
        "first-failure",
        "second",
        "third-still-alerts",
        "fourth-in-an-hour-flaps",
        "fourth-just-inside-the-hour",
        "exactly-an-hour-old-is-forgotten",
        "older-than-an-hour-forgotten",
        "sixth",
        "clock-ahead-still-counts",
    ],
)
def test_flapping_boundary(earlier: list[float], flapping: bool) -> None:
    plan = classify([change("running", "failed")], failure_history={"r1": earlier}, now=NOW)
    assert kinds(plan) == ({"flapping": ["r1"]} if flapping else {"failures": ["r1"]})
    assert plan.needs_alert != flapping
    if flapping:
        assert plan.flap_counts == {"r1": len([t for t in earlier if t > NOW - 3600]) + 1}


def test_flapping_is_per_registry() -> None:
    history = {"r1": [NOW - 30, NOW - 20, NOW - 10]}
    plan = classify(
        [change("running", "failed", "r1"), change("running", "failed", "r2")],
        failure_history=history,
        now=NOW,
    )
    assert kinds(plan) == {"failures": ["r2"], "flapping": ["r1"]}


def test_failures_within_one_batch_count_towards_flapping() -> None:
    history = {"r1": [NOW - 30, NOW - 20]}
    batch = [change("running", "failed", at=NOW - 2), change("running", "failed", at=NOW - 1)]
    plan = classify(batch, failure_history=history, now=NOW)
    assert [f.at for f in plan.failures] == [NOW - 2]
    assert [f.at for f in plan.flapping] == [NOW - 1]


def test_update_history_records_failures_and_forgets_after_an_hour() -> None:
    history = {"r1": [NOW - 4000, NOW - 100], "r2": [NOW - 3700]}
    flips = [
        Flip(FAILURE, "r1", "a", "Harbor", "", NOW),
        Flip(FAILURE, "r3", "c", "Harbor", "", NOW),
        Flip(RECOVERY, "r4", "d", "Harbor", "", NOW),
        Flip(RETRY, "r5", "e", "Harbor", "", NOW),
    ]
    assert update_history(history, flips, NOW) == {"r1": [NOW - 100, NOW], "r3": [NOW]}
    assert history == {"r1": [NOW - 4000, NOW - 100], "r2": [NOW - 3700]}  # not modified


def test_history_drives_flapping_across_refreshes() -> None:
    history: dict[str, list[float]] = {}
    outcomes = []
    for minute in range(6):
        now = NOW + 60 * minute
        plan = classify([change("running", "failed", at=now)], failure_history=history, now=now)
        outcomes.append(plan.needs_alert)
        history = update_history(history, plan.all_failures(), now)
    assert outcomes == [True, True, True, False, False, False]
    later = NOW + 5 * 60 + FLAP_WINDOW + 1
    plan = classify([change("running", "failed", at=later)], failure_history=history, now=later)
    assert plan.needs_alert


# --- grouping --------------------------------------------------------------------------------


def flip(rid: str, reason: str, name: str = "") -> Flip:
    return Flip(FAILURE, rid, name or rid, "Harbor", reason, NOW)


@pytest.mark.parametrize(
    ("flips", "expected"),
    [
        ([], []),
        ([flip("a", "x")], [("x", ["a"])]),
        (
            [flip("a", "rare"), flip("b", "common"), flip("c", "common")],
            [("common", ["b", "c"]), ("rare", ["a"])],
        ),
        (
            [flip("a", "b-reason"), flip("b", "a-reason")],
            [("a-reason", ["b"]), ("b-reason", ["a"])],
        ),
        ([flip("a", " x "), flip("b", "x\n")], [("x", ["a", "b"])]),
        ([flip("1", "", "Zed"), flip("2", "", "alpha")], [("", ["2", "1"])]),
    ],
    ids=["none", "one", "most-common-first", "ties-by-reason", "trimmed", "by-name-within"],
)
def test_group_by_reason(flips: list[Flip], expected: list[tuple[str, list[str]]]) -> None:
    got = [(reason, [f.registry_id for f in members]) for reason, members in group_by_reason(flips)]
    assert got == expected


# --- the incident --------------------------------------------------------------------------


def test_incident_keeps_the_latest_flip_of_each_registry() -> None:
    incident = Incident()
    steps = [
        [change("running", "failed", "r1", at=NOW), change("finished", "failed", "r2", at=NOW)],
        [change("failed", "running", "r1", at=NOW + 60)],
        [change("running", "finished", "r1", at=NOW + 120), change("failed", REMOVED, "r2")],
    ]
    seen = []
    for i, changes in enumerate(steps):
        plan = classify(changes, retrying=incident.retrying, now=NOW + 60 * i)
        incident = accumulate(incident, plan)
        seen.append({rid: f.kind for rid, f in incident.latest.items()})
    assert seen == [
        {"r1": FAILURE, "r2": FAILURE},
        {"r1": RETRY, "r2": FAILURE},
        {"r1": RECOVERY, "r2": GONE},
    ]
    assert incident.resolved


def test_incident_ignores_an_older_plan_delivered_late() -> None:
    recovered = accumulate(Incident(), classify([change("failed", "finished", at=NOW)], now=NOW))
    late = classify([change("running", "failed", at=NOW - 60)], now=NOW)
    assert accumulate(recovered, late) == recovered


def test_incident_flapping_mark() -> None:
    history = {"r1": [NOW - 30, NOW - 20, NOW - 10]}
    flapping = classify([change("running", "failed")], failure_history=history, now=NOW)
    incident = accumulate(Incident(), flapping)
    assert incident.flapping == {"r1"}
    assert [f.registry_id for f in incident.failing] == ["r1"]
    calm = classify([change("running", "failed", at=NOW + 7200)], now=NOW + 7200)
    assert accumulate(incident, calm).flapping == frozenset()


# --- properties ------------------------------------------------------------------------------

_statuses = st.sampled_from(["running", "finished", "failed", UNKNOWN_STATUS, REMOVED, "odd"])
_changes = st.builds(
    Change,
    registry_id=st.sampled_from(["r1", "r2", "r3"]),
    name=st.text(max_size=10),
    type=st.sampled_from(REGISTRY_TYPES),
    old=_statuses,
    new=_statuses,
    reason=st.text(max_size=10),
    at=st.floats(min_value=NOW - 7200, max_value=NOW),
)


@given(
    st.lists(_changes, max_size=30),
    st.frozensets(st.sampled_from(["r1", "r2", "r3"])),
    st.dictionaries(
        st.sampled_from(["r1", "r2"]), st.lists(st.floats(NOW - 7200, NOW), max_size=6)
    ),
)
def test_recoveries_are_only_finishes_and_removals_never_recover(
    changes: list[Change], retrying: frozenset[str], history: dict[str, list[float]]
) -> None:
    plan = classify(changes, retrying=retrying, failure_history=history, now=NOW)
    for r in plan.recoveries:
        assert Change(r.registry_id, r.name, r.type, r.old, "finished", r.reason, r.at) in changes
    assert len(plan.recoveries) <= sum(c.new == "finished" for c in changes)
    assert all(f.kind is GONE for f in plan.removed)
    # Every removal is reported, as a removal and as nothing else.
    assert len(plan.removed) == sum(c.new == REMOVED for c in changes)
    others = plan.failures + plan.flapping + plan.retries + plan.recoveries
    assert all(f.kind is not GONE for f in others)
