"""The "Add a watch" form's submission in Slack.

The submission is read back into the command a person would have typed
(:func:`~bot.slack.watch_form.read_submission`) and carried out by
:meth:`~bot.slack.watch_handlers.WatchCommands.change`, the slash command's own path: the same
permission check, channel check and store. Slack waits 3 s for the answer and shows errors
only in it, so the change runs before the ack, within :data:`DEADLINE`; what is wrong goes on
the field it belongs to. On success the modal closes and the confirmation the command would
have shown is posted to the person in the watched channel (ephemeral), after the ack.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import BotError, ChannelRefused, NotAllowed
from bot.runs_service import is_reference
from bot.slack.background import Background
from bot.slack.followups import payload
from bot.slack.render import Message
from bot.slack.request_shape import user_of
from bot.slack.run_watch_command import AddRunWatch
from bot.slack.text import unescape
from bot.slack.watch_command import AddWatch
from bot.slack.watch_form import (
    BLOCK_CHANNEL,
    BLOCK_RUNS,
    BLOCK_TASK,
    FormErrors,
    Submitted,
    field_error,
    read_submission,
)
from bot.slack.watch_handlers import WatchCommands

logger = logging.getLogger(__name__)

#: Seconds the checks and the change may take before the ack (Slack waits 3, network
#: included).
DEADLINE = 2.2
_MENTION = re.compile(r"<[#@][A-Z0-9]+(?:\|[^<>]*)?>")


def plain(mrkdwn: str) -> str:
    """A sentence written for a message, as a form's plain-text error shows it."""
    return unescape(_MENTION.sub("that channel", mrkdwn))


def _too_slow(cmd: AddWatch | AddRunWatch) -> str:
    if isinstance(cmd, AddWatch) and is_reference(cmd.task_id):
        # Most likely the list call that finds the newest run, waiting for its budget.
        return (
            f"Finding the {cmd.task_id.lower()} run waits for the run list's call budget; "
            "submit again in a minute, or give its task id."
        )
    return "Slack or Redis answered too slowly; submit again."


class WatchFormHandlers:
    def __init__(
        self,
        commands: WatchCommands,
        *,
        client: AsyncWebClient,
        background: Background,
        deadline: float = DEADLINE,
    ) -> None:
        self._commands = commands
        self._client = client
        self._background = background
        self._deadline = deadline

    async def on_submit(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        user = user_of(body)
        view = body.get("view")
        try:
            submitted = read_submission(view if isinstance(view, dict) else {})
            message = await self._carry_out(submitted, user)
        except FormErrors as exc:
            await ack(response_action="errors", errors=exc.errors)
            return
        await ack()  # closes the form
        self._background.spawn(self._confirm(submitted, user, message))

    async def _carry_out(self, submitted: Submitted, user: str) -> Message:
        cmd = submitted.command
        assert cmd.channel is not None
        what = BLOCK_RUNS if isinstance(cmd, AddRunWatch) else BLOCK_TASK
        try:
            async with asyncio.timeout(self._deadline):
                return await self._commands.change(cmd, user=user, channel=cmd.channel)
        except NotAllowed:
            raise FormErrors({what: "Only the watch admins may change watches; ask one."}) from None
        except ChannelRefused as exc:
            raise FormErrors({BLOCK_CHANNEL: field_error(plain(exc.user_message()))}) from None
        except BotError as exc:
            raise FormErrors({what: field_error(plain(exc.user_message()))}) from None
        except TimeoutError:
            logger.warning("the watch form's checks took over %.1f s", self._deadline)
            raise FormErrors({what: _too_slow(cmd)}) from None

    async def _confirm(self, submitted: Submitted, user: str, message: Message) -> None:
        channel = submitted.command.channel
        assert channel is not None
        try:
            await self._client.chat_postEphemeral(channel=channel, user=user, **payload(message))
        except SlackApiError as exc:
            # Not in the channel, say: the watch is made; the Home tab and `watches` show it.
            logger.info("no confirmation for a watch form: %s", exc.response.get("error"))
        if submitted.from_home:
            await self._commands.home.publish(user)
