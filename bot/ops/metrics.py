"""Prometheus counters and histograms, on a registry of our own.

They move where their events happen (the Slack ack, lookups, HSS calls, the call budget,
alerting, the outbox), so this module imports nothing of the bot: every layer may count.
The gauges read from Redis at scrape time, and the ``/metrics`` body, are ``ops.gauges``.

Label values are bounded: fixed word lists and HTTP status codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
)
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

if TYPE_CHECKING:
    pass

#: Not the client library's global registry: nothing another library registers leaks into
#: our output, and tests read exactly what the bot defines.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(namespace="hss_sync", registry=REGISTRY)

LOOKUP_OUTCOMES = ("fresh", "refreshed", "failed", "gave_up")
ACK_KINDS = ("command", "action", "event", "other")
PRIORITIES = ("interactive", "background")
#: ``models.HssApi``'s values (this module imports nothing of the bot; a test holds them equal).
APIS = ("registries", "tasks")
FLIP_KINDS = ("failure", "recovery", "retry", "removed")
ALERT_RESULTS = ("sent", "retried", "failed")

LOOKUPS = Counter(
    "hss_sync_lookups",
    "Lookups answered (slash command, Refresh, Show details), by outcome: fresh (from the "
    "mirror, no call), refreshed (after fetching), failed (an error was shown), gave_up "
    "(no fresh data in time).",
    ["outcome"],
    registry=REGISTRY,
)
ACK_SECONDS = Histogram(
    "hss_sync_ack_seconds",
    "Time from a Slack request reaching the app to its ack being ready, by kind "
    "(command, action, event, other). Slack gives up after 3 s.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
    registry=REGISTRY,
)
HSS_CALLS = Counter(
    "hss_sync_hss_calls",
    "HTTP attempts to HSS (retries included), by API (registries: ListAssociateRegistries, "
    "tasks: ListImageScanTask) and HTTP status code, or timeout / network / cancelled / "
    "error when no response came.",
    ["api", "status"],
    registry=REGISTRY,
)
BUDGET_WAIT = Histogram(
    "hss_sync_budget_wait_seconds",
    "Time an HSS call waited for a slot of its API's shared call budget, by API "
    "(registries, tasks) and priority (interactive, background).",
    ["api", "priority"],
    buckets=(0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0),
    registry=REGISTRY,
)
FLIPS = Counter(
    "hss_sync_flips",
    "Registry status flips found in the refreshes of watched tasks, by kind "
    "(failure, recovery, retry, removed).",
    ["kind"],
    registry=REGISTRY,
)
ALERTS = Counter(
    "hss_sync_alerts",
    "Alert messages (posts, updates, thread lines) handed to Slack, by result: sent, "
    "retried (Slack was busy or unreachable; sent again later), failed (refused: dropped, "
    "or its channel parked).",
    ["result"],
    registry=REGISTRY,
)
SLACK_429 = Counter(
    "hss_sync_slack_429",
    "HTTP 429 (rate limited) answers from the Slack Web API.",
    registry=REGISTRY,
)

# Every known label value from the start: a rate over a series that appears only with its
# first event misses that event, and dashboards show 0 instead of nothing.
for _outcome in LOOKUP_OUTCOMES:
    LOOKUPS.labels(_outcome)
for _kind in ACK_KINDS:
    ACK_SECONDS.labels(_kind)
for _api in APIS:
    for _priority in PRIORITIES:
        BUDGET_WAIT.labels(_api, _priority)
    # The statuses alerts are written on; others appear with their first call.
    for _status in ("200", "429"):
        HSS_CALLS.labels(_api, _status)
for _flip in FLIP_KINDS:
    FLIPS.labels(_flip)
for _result in ALERT_RESULTS:
    ALERTS.labels(_result)


def hss_status_label(status: int | None, error_code: str = "") -> str:
    """``hss_sync_hss_calls`` label: the HTTP status, else what kept the response away."""
    if status is not None:
        return str(status)
    if error_code == "TIMEOUT":
        return "timeout"
    if error_code == "NETWORK":
        return "network"
    if error_code == "CANCELLED":
        return "cancelled"
    return "error"


class CountSlack429(AsyncRetryHandler):
    """Counts the Slack Web API's 429s, retrying nothing itself. Put it first among a
    client's retry handlers: the client asks them in order and stops at the first taker."""

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        # With ``error`` set, ``response`` is the previous attempt's, already counted.
        if error is None and response is not None and response.status_code == 429:
            SLACK_429.inc()
        return False
