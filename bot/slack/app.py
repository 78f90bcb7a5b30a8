"""The Bolt app: the slash command, the buttons and the App Home, and what every request
goes through first.

Over HTTP a request is checked before Bolt reads it (:mod:`bot.slack.request_shape`): the
signature on the raw bytes (401), then the body's shape (400), each refusal one short line
in a log that a flood cannot fill (:class:`~bot.slack.refusals.RefusalLog`). Every listener
acknowledges at once and leaves anything that may wait to :class:`~bot.slack.background.
Background`; the lookup listeners live in :mod:`bot.slack.lookup_handlers`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerting.message import ACTION_PATTERN as ALERT_ACTIONS
from bot.hss.budget import asker
from bot.kept_questions import KeptQuestions, RetryPlan
from bot.lookup import LookupService
from bot.ops import logs, metrics
from bot.runs_service import RunsService
from bot.slack.alert_buttons import AlertButtons
from bot.slack.background import Background
from bot.slack.followups import GAVE_UP, FollowUps
from bot.slack.home import ACTION_HOME_UNWATCH, ACTION_HOME_UNWATCH_RUNS
from bot.slack.lookup_handlers import (
    MAX_WAIT,
    SAY_WAIT_AFTER,
    WATCHES_NOT_YET,
    LookupHandlers,
    budget_notice,
)
from bot.slack.refusals import RefusalLog
from bot.slack.render import (
    ACTION_PAGE_PATTERN,
    ACTION_REFRESH,
    ACTION_REFRESH_CONFIRM,
    ACTION_RETRY,
    ACTION_SHARE,
)
from bot.slack.render_tasks import ACTION_TASKS_FAILED, ACTION_TASKS_PAGE_PATTERN
from bot.slack.request_shape import (
    Refused,
    check_signature,
    first_action,
    parse_body,
    shape_problem,
    user_of,
)
from bot.slack.watch_form import ACTION_HOME_ADD_WATCH, CALLBACK_ADD_WATCH
from bot.slack.watch_form_handlers import WatchFormHandlers
from bot.slack.watch_handlers import WatchCommands

logger = logging.getLogger(__name__)

__all__ = [
    "GAVE_UP",
    "MAX_WAIT",
    "SAY_WAIT_AFTER",
    "WATCHES_NOT_YET",
    "ObservedApp",
    "Route",
    "SlackBot",
    "budget_notice",
    "build_app",
    "describe_request",
]


@dataclass(frozen=True, slots=True)
class Route:
    """One registered listener: ``kind`` (command, action, event, view) and what it matches."""

    kind: str
    matches: str | re.Pattern[str]


class ObservedApp(AsyncApp):
    """Bolt's app, with every request given a request id and its ack timed. HTTP and Socket
    Mode both dispatch through here; with ``process_before_response`` the listener has
    returned (and so called ``ack``) when dispatch does. Over HTTP, :meth:`handle_http`
    checks a request before Bolt sees it; ``routes`` lists every listener registered."""

    def __init__(self, *, signing_secret: str | None = None, **kwargs: Any) -> None:
        super().__init__(signing_secret=signing_secret, **kwargs)
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self.refusals = RefusalLog()
        self.routes: list[Route] = []

    def command(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        self.routes.append(Route("command", command))
        return super().command(command, *args, **kwargs)

    def action(self, constraints: Any, *args: Any, **kwargs: Any) -> Any:
        self.routes.append(Route("action", constraints))
        return super().action(constraints, *args, **kwargs)

    def event(self, event: Any, *args: Any, **kwargs: Any) -> Any:
        self.routes.append(Route("event", event))
        return super().event(event, *args, **kwargs)

    def view(self, constraints: Any, *args: Any, **kwargs: Any) -> Any:
        self.routes.append(Route("view", constraints))
        return super().view(constraints, *args, **kwargs)

    async def handle_http(
        self, body: bytes, query: str, headers: Mapping[str, str]
    ) -> BoltResponse:
        """A request from ``/slack/events``: refused with 401 (signature) or 400 (shape)
        before Bolt parses it, else dispatched."""
        try:
            if self._verifier is not None:
                check_signature(
                    self._verifier,
                    body,
                    headers.get("X-Slack-Request-Timestamp"),
                    headers.get("X-Slack-Signature"),
                )
            content_type = (headers.get("Content-Type") or "").split(";")[0].strip() or None
            parsed = parse_body(body, content_type)
        except Refused as refused:
            return self.refuse(refused.status, refused.reason)
        problem = shape_problem(parsed)
        if problem is not None:
            return self.refuse(400, problem)
        request = AsyncBoltRequest(body=body.decode("utf-8"), query=query, headers=dict(headers))
        # Bolt's own reading differs for a command whose text contains "payload" (see
        # parse_body); its signature check still reads the raw body.
        request.body = parsed
        request.context = build_async_context(AsyncBoltContext(), parsed)
        return await self.async_dispatch(request)

    def refuse(self, status: int, reason: str) -> BoltResponse:
        self.refusals.refused(status, reason)
        return BoltResponse(status=status, body="")

    async def async_dispatch(self, req: AsyncBoltRequest) -> BoltResponse:
        problem = shape_problem(req.body)
        if problem is not None:  # Bolt and the listeners read these fields without looking
            return self.refuse(400, problem)
        kind, details = describe_request(req.body)
        asker.set(details.get("user") or None)  # whose turn a call of this request takes
        started = time.perf_counter()
        # Tasks the listener spawns copy this context: their lines carry the same id.
        with logs.request_scope(logs.new_request_id()):
            try:
                return await super().async_dispatch(req)
            finally:
                seconds = time.perf_counter() - started
                metrics.ACK_SECONDS.labels(kind).observe(seconds)
                logger.debug(
                    "slack %s acked in %.0f ms",
                    kind,
                    seconds * 1000,
                    extra={"event": "ack", "kind": kind, "ms": round(seconds * 1000, 1), **details},
                )


def describe_request(body: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The ack histogram's ``kind`` (one of ``metrics.ACK_KINDS``) and a few fields that say
    what the request was, for its debug line."""
    if "command" in body:
        fields = {"command": str(body["command"]), "text": str(body.get("text", ""))[:120]}
        return "command", {**fields, "user": user_of(body)}
    if body.get("type") == "block_actions":
        action_id = str(first_action(body).get("action_id", ""))
        return "action", {"action_id": action_id, "user": user_of(body)}
    if body.get("type") == "event_callback":
        return "event", {"event_type": str((body.get("event") or {}).get("type", ""))}
    return "other", {}


@dataclass(frozen=True)
class SlackBot:
    app: ObservedApp
    handlers: LookupHandlers
    followups: FollowUps
    background: Background

    async def tell_restarting(self, timeout: float) -> int:
        """Shutdown: stop the work after acks and tell everyone still waiting for fresh data
        that the bot is restarting (within ``timeout`` s); how many were told."""
        await self.background.aclose()
        await self.followups.kept.aclose()
        return await self.followups.tell_restarting(timeout)

    async def aclose(self) -> None:
        await self.background.aclose()
        await self.followups.kept.aclose()


async def _on_error(error: Exception, body: dict[str, Any]) -> None:
    # Listeners render BotErrors themselves; anything reaching here is a bug: log it once.
    logger.error("unhandled error in a Slack listener", exc_info=error)


def build_app(
    *,
    lookups: LookupService,
    web_client: AsyncWebClient,
    signing_secret: str | None,
    command_name: str,
    clock: Callable[[], float] = time.time,
    max_wait: float = MAX_WAIT,
    watch_commands: WatchCommands | None = None,
    alert_buttons: AlertButtons | None = None,
    retry_plan: RetryPlan | None = None,
    runs: RunsService | None = None,
) -> SlackBot:
    """The Bolt app. ``signing_secret`` is None in Socket Mode (no HTTP requests to verify)."""
    app = ObservedApp(
        client=web_client,
        signing_secret=signing_secret,
        request_verification_enabled=signing_secret is not None,
        # The ack is sent when a listener returns; work after it runs in tasks we own
        # (Background), so no listener waits on Bolt's 10 ms ack polling.
        process_before_response=True,
        raise_error_for_unhandled_request=False,
    )
    background = Background()
    followups = FollowUps(
        lookups=lookups,
        kept=KeptQuestions(lookups, plan=retry_plan),
        max_wait=max_wait,
        clock=clock,
    )
    handlers = LookupHandlers(
        lookups=lookups,
        followups=followups,
        background=background,
        clock=clock,
        watch_commands=watch_commands,
        runs=runs,
    )
    clicks = background.clicks
    app.command(command_name)(handlers.on_command)
    app.action(ACTION_PAGE_PATTERN)(clicks(handlers.on_page))
    app.action(ACTION_REFRESH)(clicks(handlers.on_refresh))
    app.action(ACTION_REFRESH_CONFIRM)(clicks(handlers.on_refresh_confirmed))
    app.action(ACTION_RETRY)(clicks(handlers.on_retry))
    app.action(ACTION_SHARE)(clicks(handlers.on_share))
    app.action(ACTION_TASKS_FAILED)(clicks(handlers.on_show_failed))
    if handlers.tasks is not None:
        app.action(ACTION_TASKS_PAGE_PATTERN)(clicks(handlers.tasks.on_page))
    if alert_buttons is not None:
        app.action(ALERT_ACTIONS)(clicks(alert_buttons.on_click))
    if watch_commands is not None:
        home = watch_commands.home
        app.event("app_home_opened")(background.events(home.on_opened))
        app.action(ACTION_HOME_UNWATCH)(clicks(home.on_unwatch))
        app.action(ACTION_HOME_UNWATCH_RUNS)(clicks(home.on_unwatch_runs))
        app.action(ACTION_HOME_ADD_WATCH)(clicks(home.on_add_watch))
        form = WatchFormHandlers(watch_commands, client=web_client, background=background)
        app.view(CALLBACK_ADD_WATCH)(form.on_submit)
    app.error(_on_error)
    return SlackBot(app=app, handlers=handlers, followups=followups, background=background)
