from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import CommandError
from bot.models import (
    REGISTRY_TYPES,
    UNKNOWN_STATUS,
    Answer,
    LookupRequest,
    Registry,
    SyncStatus,
    Totals,
)
from bot.slack.action_value import decode_action_value, encode_action_value
from bot.slack.render import (
    ACTION_PAGE_NEXT,
    ACTION_PAGE_PATTERN,
    ACTION_PAGE_PREV,
    ACTION_REFRESH,
    ACTION_SHARE,
    PAGE_SIZE,
    Message,
    render_answer,
    render_error,
    render_help,
)
from tests import support
from tests.support import HOSTILE, lookup_requests, mrkdwn_of, printable

GOLDEN = Path(__file__).parent / "golden"
NOW = 1_700_000_042.0
#: The only `<...>` tokens the renderer itself writes: a date and a user mention.
OURS = re.compile(r"<!date\^\d+\^\{time_secs\}\|[0-9:]+ UTC>|<@[UW][A-Z0-9]+>")


# --- the limit checker used by every test ----------------------------------------------------


def check_message(message: Message) -> None:
    support.check_message(message, OURS)


def buttons(message: Message) -> dict[str, dict[str, Any]]:
    return {
        e["action_id"]: e for b in message.blocks if b["type"] == "actions" for e in b["elements"]
    }


# --- data -------------------------------------------------------------------------------------


def reg(i: int, status: str = "failed", reason: str = "", **kw: str) -> Registry:
    return Registry(
        registry_id=f"id-{i}",
        registry_name=kw.get("name", f"reg-{i}"),
        registry_type=kw.get("type", "Harbor"),
        sync_status=status,
        failed_reason=reason,
    )


def answer(
    registries: tuple[Registry, ...] = (),
    request: LookupRequest | None = None,
    totals: Totals | None = None,
    fetched_at: float | None = NOW - 42,
) -> Answer:
    return Answer(
        request=request or LookupRequest(task_id="task-42"),
        registries=registries,
        totals=totals or Totals(finished=0, running=0, failed=len(registries)),
        fetched_at=fetched_at,
    )


def typical() -> Answer:
    regs = (
        reg(1, "failed", "SWR agency permission missing (SWROperatePolicy)"),
        reg(2, "failed", "SWR agency permission missing (SWROperatePolicy)", type="Jfrog"),
        reg(3, "failed", "connection timed out <10.0.0.1:443>"),
        reg(4, "running"),
        reg(5, "finished", type="SwrPrivate"),
        reg(6, UNKNOWN_STATUS),
    )
    return answer(regs, totals=Totals(finished=1, running=1, failed=3, unknown=1))


# --- golden files ----------------------------------------------------------------------------


def _golden(name: str, message: Message) -> None:
    path = GOLDEN / name
    actual = json.dumps(
        {"text": message.text, "blocks": message.blocks}, indent=2, ensure_ascii=False
    )
    if os.environ.get("UPDATE_GOLDEN"):  # UPDATE_GOLDEN=1 pytest ...; review the diff
        path.write_text(actual + "\n", encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(actual)


def test_golden_typical_answer() -> None:
    message = render_answer(typical(), now=NOW)
    check_message(message)
    _golden("answer_typical.json", message)


def test_golden_failed_filter_page_two_shared() -> None:
    request = LookupRequest(
        task_id="task-42", status=SyncStatus.FAILED, types=frozenset({"Harbor"})
    )
    regs = tuple(reg(i, "failed", f"reason {i % 3}") for i in range(45))
    message = render_answer(
        answer(regs, request), page=1, now=NOW, shareable=False, shared_by="U0ABC123"
    )
    check_message(message)
    _golden("answer_failed_page2_shared.json", message)


# --- content ---------------------------------------------------------------------------------


def test_typical_content() -> None:
    message = render_answer(typical(), now=NOW)
    body = mrkdwn_of(message)
    assert message.blocks[0]["text"]["text"] == "HSS image sync · task task-42"
    assert "*3* failed" in body and "*1* running" in body and "*1* finished" in body
    assert "*1* unknown" in body and "6 in all" in body
    assert "data from 42 s ago" in body
    assert "connection timed out &lt;10.0.0.1:443&gt;" in body
    assert ":grey_question: `reg-6`" in body
    assert "task-42: 3 failed, 1 running, 1 finished" in message.text
    assert set(buttons(message)) == {ACTION_REFRESH, ACTION_SHARE}


def test_failed_registries_are_grouped_by_reason_most_common_first() -> None:
    regs = (
        reg(1, "failed", "rare"),
        reg(2, "failed", "common"),
        reg(3, "finished"),
        reg(4, "failed", "common "),  # trailing space: same reason
        reg(5, "failed", ""),
    )
    body = mrkdwn_of(render_answer(answer(regs), now=NOW))
    common = body.index("*Failed* (2 registries): `common`")
    rare = body.index("*Failed* (1 registry): `rare`")
    none = body.index("*Failed* (1 registry): _no reason given_")
    assert common < rare and common < none < body.index("*Finished*")
    assert body.count("`common`") == 1
    assert common < body.index("`reg-2`") < body.index("`reg-4`") < rare


def test_totals_unknown_render_as_question_marks_in_the_body_only() -> None:
    message = render_answer(answer((), totals=Totals(failed=2), fetched_at=None), now=NOW)
    body = mrkdwn_of(message)
    assert "*2* failed" in body and "*?* running" in body and "? in all" in body
    assert "no data yet" in body and "_No data yet._" in body
    # The notification says what is known, without placeholders.
    assert message.text == "HSS sync task task-42: 2 failed"


@pytest.mark.parametrize(
    ("totals", "fetched_at", "notice", "expected"),
    [
        (
            Totals(),
            None,
            "Fetching fresh data from HSS…",
            "HSS sync task task-42: no data yet. Fetching fresh data from HSS…",
        ),
        (Totals(failed=3, size=1200), NOW, None, "HSS sync task task-42: 3 failed of 1200"),
        (Totals(), NOW, None, "HSS sync task task-42: 2 matching registries"),
        (
            Totals(failed=0, running=1, finished=5),
            NOW,
            None,
            "HSS sync task task-42: 0 failed, 1 running, 5 finished",
        ),
    ],
    ids=["nothing-known", "failed-only-of-size", "filtered-view", "all-known"],
)
def test_the_notification_text_says_only_what_is_known(
    totals: Totals, fetched_at: float | None, notice: str | None, expected: str
) -> None:
    regs = (reg(1, "failed"), reg(2, "running")) if fetched_at is not None else ()
    message = render_answer(
        answer(regs, totals=totals, fetched_at=fetched_at), now=NOW, notice=notice
    )
    assert message.text == expected
    assert "?" not in message.text


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (LookupRequest(task_id="t"), "No registries match."),
        (
            LookupRequest(task_id="t", status=SyncStatus.FAILED),
            "No failed registries match: failed.",
        ),
        (
            LookupRequest(task_id="t", types=frozenset({"Jfrog", "Harbor"}), name="<x>"),
            "No registries match: type=Harbor,Jfrog · name=`&lt;x&gt;`.",
        ),
    ],
)
def test_empty_result_says_so(request_: LookupRequest, expected: str) -> None:
    message = render_answer(answer((), request_), now=NOW)
    check_message(message)
    assert expected in mrkdwn_of(message)


def test_notice_is_prominent_and_escaped() -> None:
    message = render_answer(typical(), now=NOW, notice="HSS said <!channel> & left")
    check_message(message)
    assert (
        message.blocks[1]["text"]["text"]
        == ":information_source: HSS said &lt;!channel&gt; &amp; left"
    )
    assert "&lt;!channel&gt;" in message.text


def test_odd_statuses_from_the_api_still_render() -> None:
    regs = (reg(1, "paused"), reg(2, ""), reg(3, "<!here>"))
    message = render_answer(answer(regs), now=NOW)
    check_message(message)
    assert "status `paused`" in mrkdwn_of(message)


def test_share_and_shared_by() -> None:
    shared = render_answer(typical(), now=NOW, shareable=False, shared_by="U0ABC")
    assert ACTION_SHARE not in buttons(shared)
    assert "Shared by <@U0ABC>" in mrkdwn_of(shared)
    odd = render_answer(typical(), now=NOW, shared_by="<!channel>")
    check_message(odd)
    assert "Shared by &lt;!channel&gt;" in mrkdwn_of(odd)


@pytest.mark.parametrize(
    ("fetched_at", "expected"),
    [
        (None, "no data yet"),
        (float("nan"), "no data yet"),
        (NOW, "data from 0 s ago"),
        (NOW + 5, "data from 0 s ago"),  # clock skew
        (NOW - 59.9, "data from 60 s ago"),
        (NOW - 90, "data from 2 min ago"),
        (NOW - 3 * 60 - 5, "data from 3 min ago"),
        (NOW - 90 * 60, "data from 2 h ago"),  # as the CLI says it (rounded, not cut)
        (NOW - 3 * 86400, "data from 3 d ago"),
    ],
)
def test_the_answer_says_how_old_its_data_is(fetched_at: float | None, expected: str) -> None:
    # The phrase is bot.slack.text.data_age's (tested there at every boundary).
    blocks = render_answer(answer(fetched_at=fetched_at), now=NOW).blocks
    [context] = [b for b in blocks if b["type"] == "context"]
    assert context["elements"][0]["text"].split(" (<!date")[0] == expected


# --- paging ----------------------------------------------------------------------------------


def _page_text(message: Message) -> str:
    return mrkdwn_of(message)


def test_paging_buttons_and_values() -> None:
    regs = tuple(reg(i, "finished") for i in range(2 * PAGE_SIZE + 1))
    first = render_answer(answer(regs), now=NOW)
    middle = render_answer(answer(regs), page=1, now=NOW)
    last = render_answer(answer(regs), page=2, now=NOW)
    assert set(buttons(first)) == {ACTION_PAGE_NEXT, ACTION_REFRESH, ACTION_SHARE}
    assert set(buttons(middle)) == {
        ACTION_PAGE_PREV,
        ACTION_PAGE_NEXT,
        ACTION_REFRESH,
        ACTION_SHARE,
    }
    assert set(buttons(last)) == {ACTION_PAGE_PREV, ACTION_REFRESH, ACTION_SHARE}
    assert "page 2 of 3 · registries 21–40 of 41" in _page_text(middle)
    values = {k: decode_action_value(v["value"])[1] for k, v in buttons(middle).items()}
    assert values == {ACTION_PAGE_PREV: 0, ACTION_PAGE_NEXT: 2, ACTION_REFRESH: 1, ACTION_SHARE: 1}
    assert all(ACTION_PAGE_PATTERN.match(a) for a in (ACTION_PAGE_PREV, ACTION_PAGE_NEXT))
    assert not ACTION_PAGE_PATTERN.match(ACTION_REFRESH)


@pytest.mark.parametrize(("page", "shown"), [(-5, 1), (0, 1), (2, 3), (3, 3), (10**9, 3)])
def test_page_out_of_range_clamps(page: int, shown: int) -> None:
    regs = tuple(reg(i, "running") for i in range(2 * PAGE_SIZE + 1))
    message = render_answer(answer(regs), page=page, now=NOW)
    check_message(message)
    assert f"page {shown} of 3" in _page_text(message)


def test_a_single_page_has_no_paging_buttons() -> None:
    message = render_answer(answer(tuple(reg(i) for i in range(PAGE_SIZE))), now=NOW)
    assert set(buttons(message)) == {ACTION_REFRESH, ACTION_SHARE}


def test_every_registry_appears_on_exactly_one_page() -> None:
    regs = tuple(reg(i, ["failed", "running", "finished"][i % 3], f"r{i % 4}") for i in range(95))
    seen: list[str] = []
    for page in range(5):
        body = _page_text(render_answer(answer(regs), page=page, now=NOW))
        seen += re.findall(r"`(reg-\d+)`", body)
    assert sorted(seen) == sorted(r.registry_name for r in regs)


# --- hostile and huge data -------------------------------------------------------------------


def _huge(n: int = 2000) -> Answer:
    names = [*HOSTILE, "同步仓库-🚀", "e\u0301" * 200, "`" * 300, "x" * 128]
    regs = tuple(
        reg(
            i,
            ["failed", "running", "finished", UNKNOWN_STATUS, "<!here>"][i % 5],
            (HOSTILE[i % len(HOSTILE)] + " 失败原因 🚫 " + str(i)) * 400,  # ~10,000 chars
            name=names[i % len(names)] * 4,
            type=("<@U1>" * 50 if i % 7 == 0 else REGISTRY_TYPES[i % 6]),
        )
        for i in range(n)
    )
    request = LookupRequest(
        task_id="<!channel>" + "任" * 54,
        types=frozenset(REGISTRY_TYPES),
        name="<@U999>" + "n" * 121,
        ep="<!subteam^S1>" + "e" * 243,
    )
    totals = Totals(finished=400, running=400, failed=800, unknown=400)
    return answer(regs, request, totals)


@pytest.mark.parametrize("page", [0, 1, 37, 60, 99, 100, 5000])
def test_two_thousand_hostile_registries_stay_within_limits(page: int) -> None:
    message = render_answer(
        _huge(), page=page, now=NOW, notice="<!channel> " * 1000, shared_by="<@U1>"
    )
    check_message(message)
    # Button values carry raw input back to us (never shown); leave them out.
    shown = [
        {**b, "elements": [{k: v for k, v in e.items() if k != "value"} for e in b["elements"]]}
        if b["type"] == "actions"
        else b
        for b in message.blocks
    ]
    text = json.dumps(shown, ensure_ascii=False) + message.text
    for hostile in ("<!here>", "<!subteam^S1>", "<https://evil.example|click>", "<@U999>", "<@U1>"):
        assert hostile not in mrkdwn_of(message) + message.text
    assert "<!channel>" not in mrkdwn_of(message) + message.text
    # The only place an untrusted `<` is shown is the plain_text header, which Slack shows
    # literally.
    assert text.count("<!channel>") == 1
    assert message.blocks[0]["text"]["type"] == "plain_text"


def test_every_reason_unique_per_page_still_fits() -> None:
    regs = tuple(reg(i, "failed", f"{i} " + "<é>" * 3000, name="&" * 128) for i in range(PAGE_SIZE))
    message = render_answer(answer(regs), now=NOW, notice="x" * 5000)
    check_message(message)
    assert mrkdwn_of(message).count("*Failed* (1 registry)") == PAGE_SIZE


_text = st.text(max_size=200) | st.sampled_from(HOSTILE)
_registries = st.builds(
    Registry,
    registry_id=_text,
    registry_name=_text,
    registry_type=_text | st.sampled_from(REGISTRY_TYPES),
    sync_status=st.sampled_from(["failed", "running", "finished", UNKNOWN_STATUS, "", "x"]),
    failed_reason=_text,
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(_registries, max_size=60),
    st.integers(min_value=-2, max_value=5),
    st.none() | _text,
    st.none() | st.floats(allow_nan=True),
)
def test_any_data_renders_within_limits(
    regs: list[Registry], page: int, notice: str | None, fetched_at: float | None
) -> None:
    message = render_answer(
        answer(tuple(regs), fetched_at=fetched_at), page=page, now=NOW, notice=notice
    )
    check_message(message)


# --- button values ---------------------------------------------------------------------------

_MAX_REQUEST = LookupRequest(
    task_id='"' * 64,
    status=SyncStatus.RUNNING,
    types=frozenset(REGISTRY_TYPES),
    name="\\" * 128,
    ep='"' * 256,
)


def test_longest_request_fits_a_button_value() -> None:
    value = encode_action_value(_MAX_REQUEST, 100_000)
    assert len(value) <= 2000
    assert decode_action_value(value) == (_MAX_REQUEST, 100_000)


def test_encoding_is_compact() -> None:
    assert encode_action_value(LookupRequest(task_id="t1"), 0) == '{"v":1,"t":"t1","p":0}'


def test_invalid_request_renders_without_buttons() -> None:
    bad = answer((reg(1),), LookupRequest(task_id="x" * 65))
    message = render_answer(bad, now=NOW)
    check_message(message)
    assert buttons(message) == {}


@given(lookup_requests.filter(printable), st.integers(min_value=0, max_value=100_000))
def test_action_value_round_trip(request: LookupRequest, page: int) -> None:
    value = encode_action_value(request, page)
    assert len(value) <= 2000
    assert decode_action_value(value) == (request, page)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "null",
        "[]",
        "{}",
        "not json",
        '{"v":2,"t":"t","p":0}',
        '{"v":1,"t":"t"}',
        '{"v":1,"p":0}',
        '{"v":1,"t":"","p":0}',
        '{"v":1,"t":"t","p":-1}',
        '{"v":1,"t":"t","p":100001}',
        '{"v":1,"t":"t","p":true}',
        '{"v":1,"t":"t","p":1.0}',
        '{"v":1,"t":"t","p":NaN}',
        '{"v":1,"t":7,"p":0}',
        '{"v":1,"t":"t","p":0,"s":"done"}',
        '{"v":1,"t":"t","p":0,"s":1}',
        '{"v":1,"t":"t","p":0,"y":"Harbor"}',
        '{"v":1,"t":"t","p":0,"y":["harbor"]}',
        '{"v":1,"t":"t","p":0,"y":[]}',
        '{"v":1,"t":"t","p":0,"y":[1]}',
        '{"v":1,"t":"t","p":0,"n":""}',
        '{"v":1,"t":"t","p":0,"n":5}',
        '{"v":1,"t":"t","p":0,"e":"' + "e" * 257 + '"}',
        '{"v":1,"t":"t","p":0,"x":1}',
        '{"v":1,"t":"a\\u0000b","p":0}',
        '{"v":1,"t":"a\\ud800","p":0}',
        "[" * 1500 + "]" * 1500,
        '{"v":1,"t":"t","p":0,"n":"' + "n" * 2000 + '"}',
    ],
)
def test_junk_button_values_are_refused(value: str) -> None:
    with pytest.raises(CommandError, match="run /hss-sync again"):
        decode_action_value(value)


@given(
    st.text(max_size=300)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["v", "t", "p", "s", "y", "n", "e", "z"]), inner, max_size=7
            )
        ),
    ).map(json.dumps)
)
def test_decoding_anything_raises_only_command_error(value: str) -> None:
    try:
        request, page = decode_action_value(value)
    except CommandError:
        return
    assert encode_action_value(request, page)


# --- help and errors -------------------------------------------------------------------------


def test_help() -> None:
    message = render_help()
    check_message(message)
    assert "/hss-sync" in mrkdwn_of(message)
    assert "Harbor" in mrkdwn_of(message)
    odd = render_help("/hss`<!channel>" + "x" * 300)
    check_message(odd)


def test_error_is_short_and_escaped() -> None:
    message = render_error('Unknown option "<!channel>=". ' + "y" * 10_000)
    check_message(message)
    assert len(message.blocks) == 1
    assert "&lt;!channel&gt;" in mrkdwn_of(message)
    assert len(mrkdwn_of(message)) < 2000
