"""Every Redis key the bot uses, in one place.

Keys are namespaced under ``hss:``. Values supplied by users or HSS (task ids, enterprise
project ids) are percent-encoded so that a ``:`` in them can never collide with another key.
"""

from __future__ import annotations

from urllib.parse import quote

from bot.models import HssApi, TaskRef

PREFIX = "hss"


def _part(value: str | None) -> str:
    return quote(value if value is not None else "-", safe="")


def task_part(ref: TaskRef) -> str:
    return f"{_part(ref.project_id)}:{_part(ref.enterprise_project_id)}:{_part(ref.task_id)}"


# --- call budgets (scope = fingerprint of the AK: one IAM user at HSS) ---
# One budget per API, as HSS counts calls per API. ListAssociateRegistries keeps the names it
# had before there was a second API (``hss:budget:{scope}:log``), so replicas of either
# version share its budget during an upgrade; another API's have the API's name after the
# scope (``hss:budget:{scope}:tasks:log``). A scope (hex, or ``anonymous``) has no colon, so
# the two kinds never meet.


def _budget(scope: str, api: str) -> str:
    if api == HssApi.REGISTRIES:
        return f"{PREFIX}:budget:{scope}"
    return f"{PREFIX}:budget:{scope}:{_part(api)}"


def budget_log(scope: str, api: str = HssApi.REGISTRIES) -> str:
    """ZSET member=call id, score=start time (s). Calls in the sliding window; trimmed by
    the acquire script, expires one window after the last call."""
    return f"{_budget(scope, api)}:log"


def budget_waiters(scope: str, api: str = HssApi.REGISTRIES) -> str:
    """ZSET member=waiter id, score=expiry time (s). Interactive callers waiting for a slot;
    background callers yield to any live entry. Entries expire if their owner dies; the key
    expires with its last entry."""
    return f"{_budget(scope, api)}:waiters"


def budget_queue(scope: str, api: str = HssApi.REGISTRIES) -> str:
    """ZSET member=``{arrival:017.6f}:{waiter id}:{asker}``, score=round + (size - 1) / 1000.
    The live waiters of ``budget_waiters`` in the order slots go across replicas: round robin
    between askers (the score's integer part), shortest question first within a round (its
    fraction: the calls the question takes, capped at 1000; one call is 0), then first come,
    first served (the member starts with the arrival, Redis clock, s). A longer question's
    place that waited a window moves to the round being served with size one (aging). The
    expiry set alone cannot keep order: it is rewritten on every wake-up. Trimmed with the
    waiters' set; same TTL."""
    return f"{_budget(scope, api)}:queue"


def budget_places(scope: str, api: str = HssApi.REGISTRIES) -> str:
    """HASH field=waiter id, value=its member of ``budget_queue``: how a waiter finds its
    place; field ``t:{waiter id}`` = when a longer question's place queued (Redis clock, s),
    for aging. Changed with the queue in the budget script; same TTL."""
    return f"{_budget(scope, api)}:places"


def budget_askers(scope: str, api: str = HssApi.REGISTRIES) -> str:
    """HASH field ``n:{asker}`` = places the asker holds in ``budget_queue``, ``r:{asker}`` =
    round of the last of them: the per-asker cap and where the asker's next question goes.
    Both fields leave with the asker's last place; same TTL as the queue."""
    return f"{_budget(scope, api)}:askers"


# --- authentication (scope = fingerprint of the AK/SK pair; shared by every API) ---


def auth_lock(scope: str) -> str:
    """STRING JSON {error_code, request_id, at}. Set when HSS answered 401/403: nobody calls
    HSS with this AK until an operator clears it (`hss-sync-bot reset-auth`) or the AK/SK
    changes (a new scope). No TTL: repeated failures would lock the AK/SK at HSS."""
    return f"{PREFIX}:auth:{scope}:lock"


def auth_proven(scope: str) -> str:
    """STRING JSON {at}: a call with this AK/SK pair got past HSS's gateway (a 200 or an
    ``HSS.*`` error). Until it exists at most one call is in flight (``auth_probe``), so a
    wrong secret costs one 401, not a burst. PX one day, renewed by every such call, so a
    restart keeps it; deleted with every change of ``auth_lock``."""
    return f"{PREFIX}:auth:{scope}:proven"


def auth_probe(scope: str) -> str:
    """STRING lock token (``redis.asyncio.lock.Lock``), PX 10 s, renewed by its holder while
    it waits for a call slot and calls: the one call in flight while the pair is not
    proven, across replicas and CLI runs. A dead holder's probe expires by itself."""
    return f"{PREFIX}:auth:{scope}:probe"


# --- the mirror ---


def mirror(ref: TaskRef) -> str:
    """HASH field ``meta`` = JSON (generation, views, totals); fields ``c0..cN`` = zlib
    chunks of packed registry rows. Replaced whole in one MULTI so readers never see a mix.
    No TTL: the mirror is what lets the bot answer without calls."""
    return f"{PREFIX}:mirror:{task_part(ref)}"


def mirror_changes(ref: TaskRef) -> str:
    """STREAM of status changes the mirror saw (registry id, old, new, reason, time), added
    in the save's MULTI. The alert pipeline reads it after ``alert_cursor(ref)`` and, once a
    round's MULTI has moved the cursor, trims it to the cursor (XTRIM MINID: the cursor's
    entry stays, every later one too), so a watched task keeps only what is not alerted
    yet. Nothing else reads it. A task nobody watches has no cursor and no reader: XADD's
    MAXLEN ~10,000 bounds it, and a later watch takes those entries as its baseline. No TTL."""
    return f"{PREFIX}:mirror:{task_part(ref)}:changes"


def missing_task(ref: TaskRef) -> str:
    """STRING JSON {error_code, error_msg, request_id, status}: HSS said the task does not
    exist (``HSS.0011``). While it lives, asking about the task again gets this answer
    without a call. PX 60 s: a short TTL, because the task may be created any time."""
    return f"{PREFIX}:missing:{task_part(ref)}"


def refresh_lock(ref: TaskRef, view: str) -> str:
    """STRING owner id, PX = fetch deadline. One refresher per task view across replicas;
    others wait for the mirror's generation to move instead of calling HSS."""
    return f"{PREFIX}:refresh:{task_part(ref)}:{quote(view, safe='')}"


# --- watches (channels subscribed to a task's flips); no TTLs: they must survive restarts ---


def watch_channel(channel: str) -> str:
    """HASH field = ``{project_id}:{task_id}`` (percent-encoded), value = JSON watch record.
    One channel's watches: listed with one HGETALL, paused together in one MULTI. A channel
    watches a task id at most once (ep is a property of the watch). Gone with its last
    field."""
    return f"{PREFIX}:watch:channel:{_part(channel)}"


def watch_task(ref: TaskRef) -> str:
    """SET of channel ids watching this task (project, ep, task id): who hears of a flip,
    without reading every channel. Changed in the same MULTI as ``watch_channel``."""
    return f"{PREFIX}:watch:task:{task_part(ref)}"


def watched_tasks() -> str:
    """SET member = JSON ``[project_id, task_id, ep]``: every task with at least one watch,
    which the scheduler refreshes. JSON rather than the key suffix so that members decode
    back to a ``TaskRef``."""
    return f"{PREFIX}:watch:tasks"


def watch_channels() -> str:
    """SET of channel ids with at least one watch, for ``watches all`` and the App Home."""
    return f"{PREFIX}:watch:channels"


# --- run watches (channels following every new sync run of a kind); no TTLs ---


def run_watch_channel(channel: str) -> str:
    """HASH field = the kind followed (``autoSync``, ``manualSync``, or ``all`` for every run),
    value = JSON run-watch record. A channel has at most one run watch per kind; its run
    watches are listed with one HGETALL and paused together in one MULTI. Gone with its last
    field."""
    return f"{PREFIX}:runwatch:channel:{_part(channel)}"


def run_watch_channels() -> str:
    """SET of channel ids with at least one run watch: whether anything follows runs, and
    every run watch without scanning. Changed in the same MULTI as ``run_watch_channel``."""
    return f"{PREFIX}:runwatch:channels"


# --- alerts (the alerting pipeline's progress and one incident per channel and task) ---


def alert_cursor(ref: TaskRef) -> str:
    """STRING: id of the last ``mirror_changes(ref)`` entry the alerting pipeline handled.
    WATCHed and set in the MULTI that queues the alerts, so each entry alerts once across
    replicas; the stream is trimmed up to it after that MULTI. No TTL: losing it would
    replay what is left of the stream as new flips."""
    return f"{PREFIX}:alert:cursor:{task_part(ref)}"


def alert_state(channel: str, ref: TaskRef) -> str:
    """HASH ``incident`` (JSON), ``history`` (JSON failure times), ``opened_at``, ``acked_by``
    (Acknowledge button), ``parent_ts`` (set by the outbox sender once the alert is posted).
    One channel's incident for one task, re-rendered whole on every change; read and written
    only through ``bot.alerting.state``. No TTL: an open incident may last days; one older
    than its watch is ignored, so a re-watch starts fresh.
    (Slack channel ids are upper case, so no channel id collides with ``cursor``.)"""
    return f"{PREFIX}:alert:{_part(channel)}:{task_part(ref)}"


# --- outbox (alerts waiting for Slack); no TTLs unless said: an item is deleted once sent ---


def outbox(channel: str) -> str:
    """STREAM of items for one channel (fields kind, alert, text, blocks, dedup, and task for the
    alert log line), oldest first.
    Added in the alerting's MULTI; an entry is XDELed only after Slack took it, so a sender
    that dies mid-send loses nothing (the next one sends it again: at most one duplicate)."""
    return f"{PREFIX}:outbox:{_part(channel)}"


def outbox_channels() -> str:
    """SET of channel ids whose stream may hold items: what the senders scan. Added with every
    item; removed (by a script that checks the stream is empty) once a channel drains."""
    return f"{PREFIX}:outbox:channels"


def outbox_lease(channel: str) -> str:
    """STRING lock token (``redis.asyncio.lock.Lock``), PX = lease timeout (~10 s), renewed
    while sending: one sender per channel across replicas, so items go out in order. A dead
    replica's lease expires by itself and another takes the channel over."""
    return f"{PREFIX}:outbox:lease:{_part(channel)}"


def outbox_not_before(channel: str) -> str:
    """STRING time (s) before which nothing is sent to the channel: the pace (~1 message a
    second), a 429's Retry-After, or a back-off; shared so every replica keeps to it.
    PX = the wait plus an hour: it only has to outlive the wait."""
    return f"{PREFIX}:outbox:not-before:{_part(channel)}"


def outbox_parked() -> str:
    """HASH field = channel id, value = Slack's permanent error (``channel_not_found``...).
    A parked channel keeps its items but gets nothing until resumed. No TTL: people have to
    fix the channel first."""
    return f"{PREFIX}:outbox:parked"


def outbox_sent(dedup: str) -> str:
    """STRING ``1``, EX one day: the item with this dedup id was delivered. Written with the
    XDEL, so an item queued twice (a caller retrying an EXEC that had in fact succeeded) is
    skipped instead of posted again."""
    return f"{PREFIX}:outbox:sent:{_part(dedup)}"


# --- scheduler (background refreshes of watched tasks) ---


def scheduler_lease(ref: TaskRef) -> str:
    """STRING lease token (``redis.asyncio.lock.Lock``), PX = the poll interval, extended
    while the refresh runs. One replica refreshes a watched task at a time; a dead replica's
    lease expires by itself, so its task is taken over within two poll intervals."""
    return f"{PREFIX}:scheduler:lease:{task_part(ref)}"


# --- the sync runs (ListImageScanTask): one mirror per project and enterprise project ---


def _runs_part(project_id: str, ep: str | None) -> str:
    return f"{_part(project_id)}:{_part(ep)}"


def runs(project_id: str, ep: str | None) -> str:
    """HASH ``at`` = epoch s the list call was sent (the data's age), ``runs`` = compact JSON
    of the newest runs (``bot.storage.runs_store``). Replaced whole in one MULTI, and only by
    a newer list. No TTL: it is what lets ``tasks`` and ``latest`` answer without a call."""
    return f"{PREFIX}:runs:{_runs_part(project_id, ep)}"


def runs_refresh_lock(project_id: str, ep: str | None) -> str:
    """STRING lock token (``redis.asyncio.lock.Lock``), PX ~6 s, renewed by its holder while
    it waits for a call slot and calls: one list call at a time across replicas; the others
    wait for ``runs`` to move instead of calling."""
    return f"{PREFIX}:runs:{_runs_part(project_id, ep)}:refresh"


def runs_refused(project_id: str, ep: str | None) -> str:
    """STRING JSON {error_code, error_msg, request_id, status, at}: HSS refused the list API
    (403, 404...). While it lives, ``tasks`` and ``latest`` answer "unavailable" without a
    call. PX 5 minutes: a granted permission shows within that. Never the auth lock-out: a
    refused list must not stop lookups by task id."""
    return f"{PREFIX}:runs:{_runs_part(project_id, ep)}:refused"


# --- following sync runs (``bot.alerting.run_follower``); TTLs of ``RUN_STATE_TTL`` ---------
# A run is named by a ``TaskRef`` (project, enterprise project, the run's task id).

#: Seconds a followed run's state outlives its last change: longer than a week, so the next
#: daily run still finds what the previous one was told, and an idle cluster forgets.
RUN_STATE_TTL = 30 * 86_400


def run_follow(ref: TaskRef) -> str:
    """HASH ``progress`` (JSON status and counts last listed), ``changed_at`` (when they last
    moved, data time), ``fetched_for`` (JSON failed count, total and ended for which the
    channels were last told), ``done`` (ended and told). Written by the follower only;
    EX ``RUN_STATE_TTL``, renewed on every write."""
    return f"{PREFIX}:follow:run:{task_part(ref)}"


def run_alert(channel: str, ref: TaskRef) -> str:
    """HASH ``state`` (JSON: what the channel was told about the run) and ``parent_ts`` (the
    run message's ts, set by the outbox when it posts it). WATCHed by the follower, written
    in the MULTI that queues its outbox items; EX ``RUN_STATE_TTL``."""
    return f"{PREFIX}:follow:alert:{_part(channel)}:{task_part(ref)}"


def run_notice(channel: str, ref: TaskRef, what: str) -> str:
    """HASH ``parent_ts`` of a notice posted on its own (``stuck`` about a run with no
    message, ``missed`` after a run, whose id ``ref`` holds): written by the outbox, EX
    ``RUN_STATE_TTL`` set by the follower when it queues the notice."""
    return f"{PREFIX}:follow:notice:{_part(what)}:{_part(channel)}:{task_part(ref)}"


def runs_missed() -> str:
    """HASH field = channel id, value = the mark of the absence of a scheduled run the channel
    was last told about (``run_flips.Missed.mark``): one "missed" notice per absence. No
    TTL: one small field per channel following scheduled runs."""
    return f"{PREFIX}:follow:missed"


def runs_follower_lease() -> str:
    """STRING lock token (``redis.asyncio.lock.Lock``), PX one ``TASKS_POLL_SECONDS`` (30 s
    at most), extended while a round runs: one replica follows runs at a time."""
    return f"{PREFIX}:follow:lease"


def runs_follow_round() -> str:
    """STRING epoch seconds of the last round's start: every replica keeps to one round per
    ``TASKS_POLL_SECONDS`` across the cluster. PX = twice that poll."""
    return f"{PREFIX}:follow:round"
