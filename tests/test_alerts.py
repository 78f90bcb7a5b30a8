"""Alert messages and thread lines: Slack's limits whatever the data, escaping, buttons."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.alerting.flips import AlertPlan, Flip, FlipKind, Incident, accumulate
from bot.alerting.message import (
    ACTION_ACK,
    ACTION_ALL,
    ACTION_DETAILS,
    ACTION_MUTE_1H,
    ACTION_MUTE_24H,
    ACTION_PATTERN,
    ACTION_UNMUTE,
    FAILED_LINES,
    THREAD_LINES,
    AlertAction,
    decode_alert_action,
    encode_alert_value,
    render_alert,
    render_thread_line,
)
from bot.errors import CommandError
from bot.models import REGISTRY_TYPES, LookupRequest, SyncStatus, Totals
from bot.slack.render import Message
from tests.support import (
    HOSTILE,
    HOSTILE_RAW,
    block_texts,
    check_message,
    lookup_requests,
    mrkdwn_of,
    printable,
)

NOW = 1_764_000_000.0
SCOPE = LookupRequest(task_id="task-42")
FAILURE, RECOVERY, RETRY, GONE = (
    FlipKind.FAILURE,
    FlipKind.RECOVERY,
    FlipKind.RETRY,
    FlipKind.REMOVED,
)
#: The only `<...>` tokens alerts write themselves: date tokens and a validated user mention.
OURS = re.compile(r"<!date\^\d+\^\{date_short_pretty\} \{time\}\|[0-9: -]+UTC>|<@[UW][A-Z0-9]+>")
ALL_ACTIONS = [ACTION_ACK, ACTION_MUTE_1H, ACTION_MUTE_24H, ACTION_UNMUTE, ACTION_DETAILS]


def check(message: Message) -> None:
    check_message(message, OURS)


def body(message: Message) -> str:
    return "\n".join(t["text"] for b in message.blocks for t in block_texts(b))


def buttons(message: Message) -> dict[str, str]:
    return {
        e["action_id"]: e["value"]
        for b in message.blocks
        if b["type"] == "actions"
        for e in b["elements"]
    }


def flip(
    i: int,
    kind: FlipKind = FAILURE,
    reason: str = "auth failed",
    *,
    name: str = "",
    at: float = NOW,
) -> Flip:
    return Flip(kind, f"id-{i}", name or f"reg-{i}", "Harbor", reason, at, old="running")


def incident(*flips: Flip, flapping: frozenset[str] = frozenset()) -> Incident:
    return Incident(latest={f.registry_id: f for f in flips}, flapping=flapping)


def shown_failing(message: Message) -> int:
    return body(message).count("\n• ") + body(message).startswith("• ")


# --- the channel message ---------------------------------------------------------------------


def test_typical_alert() -> None:
    state = incident(
        flip(1, reason="timeout"),
        flip(2, reason="auth failed"),
        flip(3, reason="auth failed"),
        flip(4, RECOVERY, ""),
    )
    message = render_alert(SCOPE, state, now=NOW, totals=Totals(finished=90, running=7, failed=3))
    check(message)
    text = body(message)
    assert message.blocks[0]["text"]["text"] == "Sync failures · task task-42"
    assert "*3 registries* failing" in text
    assert "*1* recovered" in text
    assert "Task now: *3* failed of 100 registries" in text
    assert text.index("(2 registries): `auth failed`") < text.index("(1 registry): `timeout`")
    assert text.index("`reg-2`") < text.index("`reg-3`") < text.index("`reg-1`")
    assert set(buttons(message)) == {ACTION_ACK, ACTION_MUTE_1H, ACTION_MUTE_24H, ACTION_DETAILS}
    # Each failing registry under its own reason, never all under the most common one.
    assert message.text == (
        "HSS sync task task-42: 3 registries failing — auth failed (2): reg-2, reg-3; "
        "timeout (1): reg-1. 1 recovered"
    )


@pytest.mark.parametrize(
    ("n", "reasons", "more"),
    [
        (1, 1, 0),
        (FAILED_LINES, 1, 0),
        (FAILED_LINES, FAILED_LINES, 0),
        (FAILED_LINES + 1, 1, 1),
        (FAILED_LINES + 1, FAILED_LINES + 1, 1),
        (500, 3, 500 - FAILED_LINES),
        (500, 500, 500 - FAILED_LINES),
    ],
    ids=[
        "one",
        "exactly-fits",
        "fits-each-own-reason",
        "one-over",
        "one-over-own-reasons",
        "500-few-reasons",
        "500-own-reasons",
    ],
)
def test_more_line_counts_what_is_left_out(n: int, reasons: int, more: int) -> None:
    state = incident(*(flip(i, reason=f"reason {i % reasons}") for i in range(n)))
    message = render_alert(SCOPE, state, now=NOW)
    check(message)
    assert shown_failing(message) == n - more
    if more:
        assert f"_+{more} more failing registries" in body(message)
        assert ACTION_ALL in buttons(message)
    else:
        assert "more failing" not in body(message)
        assert ACTION_ALL not in buttons(message)


def test_five_hundred_hostile_flips_with_huge_reasons_stay_escaped_and_within_limits() -> None:
    flips = []
    for i in range(500):
        hostile = HOSTILE[i % len(HOSTILE)]
        kind = [FAILURE, FAILURE, RECOVERY, RETRY, GONE][i % 5]
        reason = (hostile + " ") * 1000 + str(i % 7)
        flips.append(flip(i, kind, reason[:10_000], name=f"{hostile}{i}"))
    state = incident(*flips, flapping=frozenset(f"id-{i}" for i in range(0, 500, 3)))
    scope = LookupRequest(task_id="<!channel>", types=frozenset({"Harbor"}), name="<@U1>", ep="0")
    message = render_alert(scope, state, now=NOW, acked_by="<!here>", muted_until=NOW + 60)
    check(message)
    everything = mrkdwn_of(message) + message.text  # the header is plain_text: shown literally
    for raw in HOSTILE_RAW:
        assert raw not in everything
    assert "&lt;!channel&gt;" in body(message)
    assert "_+188 more failing registries" in body(message)
    assert ":repeat: flapping" in body(message)
    request = decode_alert_action(ACTION_ALL, buttons(message)[ACTION_ALL]).request
    assert request == LookupRequest(
        "<!channel>", SyncStatus.FAILED, frozenset({"Harbor"}), "<@U1>", "0"
    )


def test_acknowledged_by_a_user() -> None:
    message = render_alert(SCOPE, incident(flip(1)), now=NOW, acked_by="U0123ABCD")
    check(message)
    assert "Acknowledged by <@U0123ABCD>" in body(message)
    assert ACTION_ACK not in buttons(message)


@pytest.mark.parametrize(
    "user", ["<!channel>", "U1", "u0123abcd", "U0123ABCD>", "S0123ABCD", "U" + "A" * 30, ""]
)
def test_an_acknowledging_user_that_is_not_a_user_id_is_not_shown(user: str) -> None:
    message = render_alert(SCOPE, incident(flip(1)), now=NOW, acked_by=user)
    check(message)
    assert ":eyes: Acknowledged ·" in body(message)
    assert "<@" not in body(message)


def test_muted_until_the_future() -> None:
    until = NOW + 3600
    message = render_alert(SCOPE, incident(flip(1)), now=NOW, muted_until=until)
    check(message)
    assert f"Muted until <!date^{int(until)}^" in body(message)
    assert ACTION_UNMUTE in buttons(message)
    assert ACTION_MUTE_1H not in buttons(message)


@pytest.mark.parametrize("until", [NOW, NOW - 1, float("nan"), float("-inf")])
def test_an_expired_mute_is_not_shown(until: float) -> None:
    message = render_alert(SCOPE, incident(flip(1)), now=NOW, muted_until=until)
    check(message)
    assert "Muted" not in body(message)
    assert {ACTION_MUTE_1H, ACTION_MUTE_24H} <= set(buttons(message))


def test_all_recovered() -> None:
    state = incident(flip(1, RECOVERY), flip(2, RECOVERY), flip(3, GONE))
    message = render_alert(SCOPE, state, now=NOW)
    check(message)
    assert message.blocks[0]["text"]["text"] == "All recovered · task task-42"
    # Said once, with how many: not "All recovered ✓ 2 recovered".
    assert "*All recovered* (2 registries)" in body(message)
    assert "recovered" not in body(message).replace("All recovered", "").split("\n")[1]
    assert ":wastebasket: *1* removed" in body(message)
    assert "*Removed from the task* (not recoveries)" in body(message)
    assert ACTION_ACK not in buttons(message)
    assert (
        message.text
        == "HSS sync task task-42: all recovered (2 registries). 1 removed from the task"
    )


def test_one_recovered_is_said_once() -> None:
    message = render_alert(SCOPE, incident(flip(1, RECOVERY)), now=NOW)
    check(message)
    summary = body(message).split("\n")[1]
    assert summary == ":white_check_mark: *All recovered* (1 registry)"
    assert message.text == "HSS sync task task-42: all recovered (1 registry)"


def test_all_removed_counts_without_calling_it_recovered() -> None:
    message = render_alert(SCOPE, incident(flip(1, GONE), flip(2, GONE)), now=NOW)
    check(message)
    assert body(message).split("\n")[1] == (
        ":white_check_mark: *All removed from the task* (2 registries)"
    )
    assert message.text == "HSS sync task task-42: all removed from the task (2 registries)"


@pytest.mark.parametrize("reasons", [1, 2, 3, 4, 40])
def test_the_notification_text_puts_each_failure_under_its_own_reason(reasons: int) -> None:
    flips = [flip(i, reason=f"reason-{i % reasons}") for i in range(40)]
    text = render_alert(SCOPE, incident(*flips), now=NOW).text
    assert text.startswith("HSS sync task task-42: 40 registries failing — ")
    groups = text.split(" — ", 1)[1].split("; ")
    named = [g for g in groups if not g.startswith("+")]
    assert len(named) == min(reasons, 3)
    for group in named:
        reason, names = group.split(": ", 1)
        wanted = reason.split(" (")[0]
        for name in re.findall(r"reg-\d+", names):  # every name listed is one with that reason
            assert flips[int(name[4:])].reason == wanted
    if reasons > 3:
        assert groups[-1] == f"+{reasons - 3} more reasons"


def test_the_notification_text_of_an_incident_only_retrying() -> None:
    text = render_alert(SCOPE, incident(flip(1, RETRY, "")), now=NOW).text
    assert text == "HSS sync task task-42: 0 registries failing. 1 retrying"


def test_the_notification_text_escapes_names_and_reasons() -> None:
    flips = [
        flip(1, reason="<!channel> & <https://x|y>", name="<@U123>"),
        flip(2, reason="a\nsecond <!here> line", name="`tick` *b*"),
    ]
    text = render_alert(SCOPE, incident(*flips), now=NOW).text
    for raw in ("<!channel>", "<@U123>", "<!here>", "<https://x|y>"):
        assert raw not in text
    assert "&lt;!channel&gt; &amp; &lt;https://x|y&gt;" in text and "\n" not in text


def test_the_message_is_rendered_from_state_so_updates_replace_it() -> None:
    first = accumulate(Incident(), AlertPlan(failures=(flip(1), flip(2))))
    later = accumulate(first, AlertPlan(recoveries=(flip(1, RECOVERY, at=NOW + 60),)))
    message = render_alert(SCOPE, later, now=NOW + 60)
    check(message)
    assert "*1 registry* failing" in body(message)
    assert "*Recovered*\n• `reg-1` · Harbor" in body(message)
    assert render_alert(SCOPE, later, now=NOW + 60) == message


def test_watch_filters_are_shown() -> None:
    scope = LookupRequest("t", types=frozenset({"Jfrog", "Harbor"}), name="prod", ep="0")
    message = render_alert(scope, incident(flip(1)), now=NOW)
    assert "Watching: type=Harbor,Jfrog · name=`prod` · ep=`0`" in body(message)


def test_an_invalid_scope_renders_without_buttons() -> None:
    message = render_alert(LookupRequest("x" * 65), incident(flip(1)), now=NOW)
    check(message)
    assert buttons(message) == {}


_flips = st.builds(
    Flip,
    kind=st.sampled_from(FlipKind),
    registry_id=st.text(max_size=20),
    name=st.text(max_size=200),
    type=st.text(max_size=40),
    reason=st.text(max_size=400),
    at=st.floats(allow_nan=True),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_flips, max_size=80), st.none() | st.text(max_size=30), st.none() | st.floats())
def test_any_incident_renders_within_limits(
    flips: list[Flip], acked_by: str | None, muted_until: float | None
) -> None:
    state = incident(*flips, flapping=frozenset(f.registry_id for f in flips[::2]))
    check(render_alert(SCOPE, state, now=NOW, acked_by=acked_by, muted_until=muted_until))
    plan = AlertPlan(failures=tuple(flips), flapping=tuple(flips[:5]), removed=tuple(flips))
    check(render_thread_line(plan, now=NOW))


# --- the thread ------------------------------------------------------------------------------


def test_thread_line_tells_each_kind() -> None:
    plan = AlertPlan(
        failures=(flip(1, reason="disk full"),),
        recoveries=(flip(2, RECOVERY, ""),),
        retries=(flip(3, RETRY, ""),),
        removed=(flip(4, GONE, ""),),
        flapping=(flip(5),),
        flap_counts={"id-5": 4},
    )
    message = render_thread_line(plan, now=NOW)
    check(message)
    assert body(message).splitlines()[:5] == [
        ":x: `reg-1` · Harbor failed: `disk full`",
        ":repeat: `reg-5` · Harbor failed again (4 times in the last hour): "
        "flapping, not re-alerted",
        ":arrows_counterclockwise: `reg-3` · Harbor is retrying (was failed)",
        ":white_check_mark: `reg-2` · Harbor recovered",
        ":wastebasket: `reg-4` · Harbor was removed from the task",
    ]
    assert message.text == "1 failed, 1 flapping, 1 retrying, 1 recovered, 1 removed"


def test_thread_line_with_hundreds_of_hostile_flips() -> None:
    def many(kind: FlipKind) -> tuple[Flip, ...]:
        return tuple(
            flip(i, kind, HOSTILE[i % len(HOSTILE)] * 1000, name=HOSTILE[i % len(HOSTILE)])
            for i in range(500)
        )

    plan = AlertPlan(
        failures=many(FAILURE),
        recoveries=many(RECOVERY),
        retries=many(RETRY),
        removed=many(GONE),
        flapping=many(FAILURE),
    )
    message = render_thread_line(plan, now=NOW)
    check(message)
    for raw in HOSTILE_RAW:
        assert raw not in mrkdwn_of(message)
    for what in ("failed", "flapping", "retrying", "recovered", "removed"):
        assert f"_+{500 - THREAD_LINES} more {what}_" in body(message)


def test_empty_thread_line() -> None:
    message = render_thread_line(AlertPlan(), now=NOW)
    check(message)
    assert message.text == "No changes"


# --- button values ---------------------------------------------------------------------------


@pytest.mark.parametrize("action_id", ALL_ACTIONS)
def test_value_round_trip_is_the_task_only(action_id: str) -> None:
    scope = LookupRequest("task-42", types=frozenset({"Harbor"}), name="prod", ep="0")
    value = encode_alert_value(action_id, scope)
    assert value == '{"v":1,"t":"task-42","p":0,"e":"0"}'
    decoded = decode_alert_action(action_id, value)
    assert decoded == AlertAction(action_id, LookupRequest("task-42", ep="0"))
    assert decoded.mute_seconds == {ACTION_MUTE_1H: 3600, ACTION_MUTE_24H: 86_400}.get(action_id)


def test_show_all_carries_the_watch_filters() -> None:
    scope = LookupRequest("task-42", types=frozenset({"Harbor"}), name="prod")
    value = encode_alert_value(ACTION_ALL, scope)
    request = decode_alert_action(ACTION_ALL, value).request
    assert request == LookupRequest("task-42", SyncStatus.FAILED, frozenset({"Harbor"}), "prod")


@settings(deadline=None)
@given(lookup_requests.filter(printable), st.sampled_from([*ALL_ACTIONS, ACTION_ALL]))
def test_any_value_round_trips(scope: LookupRequest, action_id: str) -> None:
    value = encode_alert_value(action_id, scope)
    assert len(value) <= 2000
    request = decode_alert_action(action_id, value).request
    assert (request.task_id, request.ep) == (scope.task_id, scope.ep)
    if action_id == ACTION_ALL:
        assert (request.types, request.name, request.status) == (
            scope.types,
            scope.name,
            SyncStatus.FAILED,
        )


@pytest.mark.parametrize(
    ("action_id", "value"),
    [
        ("hss_alert_nope", '{"v":1,"t":"t","p":0}'),
        ("", '{"v":1,"t":"t","p":0}'),
        (ACTION_ACK + "x", '{"v":1,"t":"t","p":0}'),
        (ACTION_ACK, ""),
        (ACTION_ACK, "junk"),
        (ACTION_ACK, '{"v":1,"t":"t","p":1}'),
        (ACTION_ACK, '{"v":1,"t":"t","p":0,"s":"failed"}'),
        (ACTION_MUTE_1H, '{"v":1,"t":"t","p":0,"n":"x"}'),
        (ACTION_DETAILS, '{"v":1,"t":"t","p":0,"y":["Harbor"]}'),
        (ACTION_ALL, '{"v":1,"t":"t","p":0}'),
        (ACTION_ALL, '{"v":1,"t":"t","p":0,"s":"running"}'),
        (ACTION_ACK, '{"v":1,"t":"' + "x" * 65 + '","p":0}'),
        (ACTION_ACK, '{"v":1,"t":"a\\u0000","p":0}'),
    ],
    ids=lambda v: v[:30],
)
def test_junk_is_refused(action_id: str, value: str) -> None:
    with pytest.raises(CommandError, match="run /hss-sync again"):
        decode_alert_action(action_id, value)


def test_unknown_actions_cannot_be_encoded() -> None:
    with pytest.raises(CommandError):
        encode_alert_value("hss_page_next", SCOPE)


@given(st.text(max_size=40), st.text(max_size=300))
def test_decoding_anything_raises_only_command_error(action_id: str, value: str) -> None:
    try:
        action = decode_alert_action(action_id, value)
    except CommandError:
        return
    assert ACTION_PATTERN.fullmatch(action.action_id)


def test_registry_types_in_values_are_canonical() -> None:
    scope = LookupRequest("t", types=frozenset(REGISTRY_TYPES))
    assert json.loads(encode_alert_value(ACTION_ALL, scope))["y"] == list(REGISTRY_TYPES)
