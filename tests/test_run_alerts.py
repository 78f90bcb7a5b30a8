"""Run alerts, the pure part: new / still failing / recovered, what each channel is told,
stuck and missed, and the messages (escaped, within Slack's limits, with the words people
scan for)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from bot.alerting.flips import Flip
from bot.alerting.run_flips import (
    ChannelRun,
    RunDiff,
    Say,
    Send,
    compare,
    complete,
    failed_flip,
    follows,
    is_stuck,
    missed_run,
    plan_channel,
    previous_run,
)
from bot.alerting.run_follower import channel_watches
from bot.alerting.run_message import (
    render_all_recovered,
    render_changes_line,
    render_end_line,
    render_missed,
    render_run_alert,
    render_stuck,
)
from bot.alerting.run_state import (
    RunSeen,
    RunView,
    decode_channel,
    decode_seen,
    decode_view,
    encode_channel,
    encode_seen,
    encode_view,
)
from bot.models import LookupRequest
from bot.runs import RunKind, SyncRun
from bot.storage.run_watch_store import RunWatch
from tests.support import HOSTILE, check_message, mrkdwn_of

OURS = re.compile(r"<!date\^\d+\^[^|>]*\|[^>]*>")
OURS_AND_USERS = re.compile(r"<!date\^\d+\^[^|>]*\|[^>]*>|<@U[A-Z0-9]+>")
T0 = 1_800_000_000.0


def reg(rid: str, name: str | None = None, rtype: str = "Harbor", reason: str = "timeout") -> Flip:
    return failed_flip(rid, name or f"reg-{rid}", rtype, reason, T0)


def run(
    task_id: str = "run-2",
    *,
    kind: RunKind = RunKind.AUTO,
    begin: float = T0,
    status: int = 40,
    failed: int = 0,
    total: int = 100,
    name: str = "auto-sync-20270115",
) -> SyncRun:
    done = status == 100 or status < 0
    return SyncRun(
        task_id=task_id,
        task_name=name,
        task_type=kind.value,
        begin_time=int(begin * 1000),
        end_time=int((begin + 600) * 1000) if done else 0,
        task_status=status,
        failed_num=failed,
        success_num=total * max(status, 0) // 100 - failed,
        total_num=total,
    )


# --- new / still failing / recovered ----------------------------------------------------------


def test_new_still_failing_and_recovered_against_the_previous_run() -> None:
    diff = compare([reg("a"), reg("b")], [reg("b"), reg("c"), reg("d")], complete=True, finished=())
    assert [f.registry_id for f in diff.new] == ["a"]
    assert [f.registry_id for f in diff.still] == ["b"]
    assert [f.registry_id for f in diff.recovered] == ["c", "d"]
    assert diff.mark("a") == "new" and diff.mark("b") == "still failing"
    assert diff.previous_failed == 3 and not diff.all_recovered


def test_while_a_run_goes_on_only_registries_seen_finishing_have_recovered() -> None:
    going = compare([reg("a")], [reg("c"), reg("d")], complete=False, finished={"d"})
    assert [f.registry_id for f in going.recovered] == ["d"]
    assert compare([], [reg("c")], complete=False).recovered == ()


def test_without_a_previous_run_every_failure_is_new() -> None:
    diff = compare([reg("a"), reg("b")], [], complete=True)
    assert len(diff.new) == 2 and diff.still == () and diff.recovered == ()


def test_a_watchs_filters_apply_to_both_runs() -> None:
    now = [reg("a", rtype="Harbor"), reg("b", name="team-x-app", rtype="SWR")]
    before = [reg("b", name="team-x-app", rtype="SWR"), reg("c", name="team-x-db", rtype="SWR")]
    swr = compare(now, before, complete=True, types={"SWR"})
    assert [f.registry_id for f in swr.still] == ["b"] and swr.new == ()
    assert [f.registry_id for f in swr.recovered] == ["c"]
    named = compare(now, before, complete=True, name="X-APP")
    assert [f.registry_id for f in named.failing] == ["b"] and named.recovered == ()


def test_all_recovered_needs_every_earlier_failure_back_and_none_now() -> None:
    assert compare([], [reg("c")], complete=True).all_recovered
    assert not compare([reg("a")], [reg("c")], complete=True).all_recovered
    assert not compare([], [], complete=True).all_recovered  # nothing to recover from


def test_the_previous_run_is_the_newest_earlier_run_of_the_same_kind() -> None:
    runs = [
        run("m1", kind=RunKind.MANUAL, begin=T0 - 100),
        run("a1", begin=T0 - 86_400),
        run("a0", begin=T0 - 2 * 86_400),
        run("a2", begin=T0),
        run("a3", begin=T0 + 86_400),
    ]
    assert previous_run(runs, runs[3]) == runs[1]
    assert previous_run(runs, runs[2]) is None
    assert previous_run(runs, runs[0]) is None


def test_runs_that_began_before_the_watch_are_its_baseline() -> None:
    began = run(begin=T0)
    assert follows(RunKind.AUTO, T0, began) and follows(None, T0 - 1, began)
    assert not follows(None, T0 + 1, began)
    assert not follows(RunKind.MANUAL, T0, began)


# --- stuck and missed ----------------------------------------------------------------------


def test_a_run_is_stuck_after_the_set_time_without_progress_and_never_once_ended() -> None:
    going = run(status=40)
    assert not is_stuck(going, changed_at=T0, now=T0 + 7199, after=7200)
    assert is_stuck(going, changed_at=T0, now=T0 + 7200, after=7200)
    assert not is_stuck(run(status=100), changed_at=T0, now=T0 + 99_999, after=7200)


def test_a_scheduled_run_is_missed_after_the_set_time_since_the_last_began() -> None:
    runs = [run("a1", begin=T0), run("m1", kind=RunKind.MANUAL, begin=T0 + 90_000)]
    assert missed_run(runs, created_at=T0 - 10, now=T0 + 93_599, after=93_600) is None
    missed = missed_run(runs, created_at=T0 - 10, now=T0 + 93_600, after=93_600)
    assert missed is not None and missed.last == runs[0] and missed.mark == "a1"
    # A new watch counts from when it was made, not from a run long before it.
    assert missed_run(runs, created_at=T0 + 50_000, now=T0 + 93_600, after=93_600) is None
    none = missed_run([], created_at=T0, now=T0 + 93_600, after=93_600)
    assert none is not None and none.last is None and none.mark.startswith("watch@")


# --- what a channel is told -----------------------------------------------------------------


def sends(step_sends: Sequence[Send]) -> list[tuple[str, str]]:
    return [(s.kind, s.say) for s in step_sends]


def test_a_run_with_no_failures_posts_nothing() -> None:
    step = plan_channel(
        ChannelRun(), run(status=40), compare([], [], complete=False), loud=True, stuck=False
    )
    assert step.sends == () and not step.state.posted
    done = plan_channel(
        ChannelRun(), run(status=100), compare([], [], complete=True), loud=True, stuck=False
    )
    assert done.sends == () and done.state.closed


def test_the_first_failure_posts_more_update_and_the_end_goes_to_the_thread() -> None:
    first = compare([reg("a")], [reg("b")], complete=False)
    step = plan_channel(ChannelRun(), run(status=20), first, loud=True, stuck=False)
    assert sends(step.sends) == [("post", Say.ALERT)]
    again = plan_channel(step.state, run(status=30), first, loud=True, stuck=False)
    assert again.sends == ()
    more = compare([reg("a"), reg("b")], [reg("b")], complete=False)
    step2 = plan_channel(step.state, run(status=60), more, loud=True, stuck=False)
    assert sends(step2.sends) == [("update", Say.ALERT), ("thread", Say.CHANGES)]
    assert [f.registry_id for f in step2.sends[1].added] == ["b"]
    end = plan_channel(step2.state, run(status=100), more, loud=True, stuck=False)
    assert sends(end.sends) == [("update", Say.ALERT), ("thread", Say.END)]
    assert end.state.closed
    assert plan_channel(end.state, run(status=100), more, loud=True, stuck=False).sends == ()


def test_a_run_seen_first_when_ended_posts_and_notes_its_end() -> None:
    diff = compare([reg("a")], [], complete=True)
    step = plan_channel(ChannelRun(), run(status=100), diff, loud=True, stuck=False)
    assert sends(step.sends) == [("post", Say.ALERT), ("thread", Say.END)]


def test_all_recovered_posts_one_short_message_only_for_a_finished_run() -> None:
    diff = compare([], [reg("c")], complete=True)
    step = plan_channel(ChannelRun(), run(status=100), diff, loud=True, stuck=False)
    assert sends(step.sends) == [("post", Say.ALL_RECOVERED)] and step.state.closed
    stopped = plan_channel(ChannelRun(), run(status=-1), diff, loud=True, stuck=False)
    assert stopped.sends == ()


def test_muted_watches_are_told_nothing_and_an_ended_run_stays_quiet_after() -> None:
    diff = compare([reg("a")], [], complete=False)
    assert plan_channel(ChannelRun(), run(status=50), diff, loud=False, stuck=False).sends == ()
    ended = plan_channel(ChannelRun(), run(status=100), diff, loud=False, stuck=False)
    assert ended.state.closed
    assert plan_channel(ended.state, run(status=100), diff, loud=True, stuck=False).sends == ()


def test_stuck_is_said_once_in_the_thread_or_as_a_post() -> None:
    quiet = plan_channel(ChannelRun(), run(status=40), None, loud=True, stuck=True)
    assert sends(quiet.sends) == [("post", Say.STUCK)]
    assert plan_channel(quiet.state, run(status=40), None, loud=True, stuck=True).sends == ()
    posted = ChannelRun(posted=True, shown="x", failing=frozenset({"a"}))
    step = plan_channel(posted, run(status=40), None, loud=True, stuck=True)
    assert sends(step.sends) == [("thread", Say.STUCK)]


# --- the messages ---------------------------------------------------------------------------


SCOPE = LookupRequest(task_id="run-2")


def test_the_alert_counts_first_marks_each_failure_and_names_the_run() -> None:
    diff = compare(
        [reg("a", "alpha"), reg("b", "beta", reason="auth failed")],
        [reg("b", "beta"), reg("c", "gamma")],
        complete=True,
    )
    message = render_run_alert(SCOPE, run(status=100, failed=2), diff, now=T0)
    check_message(message, OURS)
    first = message.blocks[0]["text"]["text"]
    assert "1 new, 1 still failing, 1 recovered" in first
    body = mrkdwn_of(message)
    assert re.search(r"`alpha`.*\*new\*", body) and re.search(r"`beta`.*still failing", body)
    assert "auth failed" in body and "`gamma`" in body
    assert "`auto-sync-20270115`" in body and "`run-2`" in body and "scheduled" in body
    assert message.text.startswith("HSS scheduled sync run auto-sync-20270115 (run-2): 1 new")
    actions = next(b for b in message.blocks if b["type"] == "actions")["elements"]
    assert [e["action_id"] for e in actions] == [
        "hss_alert_ack",
        "hss_alert_mute_1h",
        "hss_alert_mute_24h",
        "hss_alert_details",
    ]
    later = render_run_alert(
        SCOPE, run(status=100), diff, now=T0, acked_by="U0ACKER1", muted_until=T0 + 3600
    )
    check_message(later, OURS_AND_USERS)
    said = mrkdwn_of(later)
    assert "Acknowledged by <@U0ACKER1>" in said and "Muted until" in said
    shown = next(b for b in later.blocks if b["type"] == "actions")["elements"]
    assert [e["action_id"] for e in shown] == ["hss_alert_unmute", "hss_alert_details"]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_every_string_from_hss_is_escaped(hostile: str) -> None:
    flips = [reg(f"id{i}{hostile}", f"{hostile} {i}", reason=hostile) for i in range(30)]
    diff = compare(flips, flips[:10], complete=True)
    bad = run(status=100, name=hostile)
    for message in (
        render_run_alert(SCOPE, bad, diff, now=T0),
        render_all_recovered(SCOPE, bad, compare([], flips, complete=True)),
        render_end_line(bad, diff),
        render_changes_line(flips, [f.registry_id for f in flips], diff, now=T0),
        render_stuck(bad, since=T0),
    ):
        check_message(message, OURS)
    many = render_run_alert(SCOPE, bad, diff, now=T0)
    assert "Show all failed" in str(many.blocks)


def test_short_messages_say_all_recovered_ended_stuck_and_missed() -> None:
    ended = run(status=100, failed=1)
    recovered = render_all_recovered(SCOPE, ended, compare([], [reg("c")], complete=True))
    assert "All recovered" in mrkdwn_of(recovered) and "all recovered" in recovered.text
    line = render_end_line(ended, compare([reg("a")], [], complete=True))
    assert "finished" in line.text and "1 new, 0 still failing, 0 recovered" in line.text
    stuck = render_stuck(run(status=40), since=T0)
    assert "stuck" in stuck.text and "auto-sync-20270115" in stuck.text
    missed = missed_run([run("a1", begin=T0)], created_at=T0, now=T0 + 1e5, after=93_600)
    assert missed is not None
    notice = render_missed(missed, after=93_600)
    check_message(notice, OURS)
    assert "missed" in notice.text and "26 h" in notice.text


def test_an_empty_diff_still_renders() -> None:
    check_message(render_run_alert(SCOPE, run(), RunDiff(), now=T0), OURS)


def test_a_channel_hears_of_a_run_once_through_its_watch_of_the_kind() -> None:
    def watch(channel: str, kind: RunKind | None, created_at: float = T0 - 10) -> RunWatch:
        return RunWatch(channel=channel, kind=kind, created_by="U1", created_at=created_at)

    both = [watch("C1", None), watch("C1", RunKind.AUTO, created_at=T0 - 5), watch("C2", None)]
    chosen = channel_watches(both, run(begin=T0))
    assert [(w.channel, w.kind) for w in chosen] == [("C1", RunKind.AUTO), ("C2", None)]
    assert channel_watches(both, run(kind=RunKind.MANUAL, begin=T0))[0].kind is None
    late = [watch("C3", None, created_at=T0 + 1)]
    assert channel_watches(late, run(begin=T0)) == []


# --- what the follower stores ---------------------------------------------------------------


def test_stored_run_state_reads_back_and_damage_reads_as_new() -> None:
    diff = compare([reg("a", "<!here> a")], [reg("c")], complete=True)
    view = RunView(run=run(status=100), diff=diff, kind=None, types=frozenset({"SWR"}), name="x")
    assert decode_view(encode_view(view)) == view
    state = ChannelRun(posted=True, shown="d", failing=frozenset({"a"}), ended=True, closed=True)
    assert decode_channel(encode_channel(state)) == state
    seen = RunSeen(progress=(40, 1, 2, 3), changed_at=T0, told=(1, 3, False), done=False)
    assert decode_seen(encode_seen(seen)) == seen
    for junk in (b"", b"{", b'{"run": 1}', b"[]", b"null"):
        assert decode_view(junk) is None
        assert decode_channel(junk) == ChannelRun()
    assert decode_seen({"progress": "[1]", "changed_at": "x"}) is None
    assert decode_seen({}) is None


def test_a_run_of_no_registries_recovered_nothing() -> None:
    empty = run(status=100, failed=0, total=0)
    assert not complete(empty)
    diff = compare([], [reg("a"), reg("b")], complete=complete(empty))
    assert diff.recovered == () and not diff.all_recovered
    step = plan_channel(ChannelRun(), empty, diff, loud=True, stuck=False)
    assert step.sends == () and step.state.closed
