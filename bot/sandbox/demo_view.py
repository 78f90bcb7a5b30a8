"""The demo's terminal: what the bot sent to Slack, printed as a person would read it.

``Printer`` writes steps, notes and messages (Block Kit as text, bold only on a terminal),
or with ``--json`` JSON Lines: one object per line, ``{"kind": "text"|"step"|"note",
"text": ...}`` or ``{"kind": "message", "label": ..., "message": <the payload Slack got>}``,
so that ``demo --json | jq`` reads every line. ``Feed`` follows the Slack stand-in's
recorded calls and prints each message the bot sent (``response_url`` answers, channel
posts, thread replies, in-place updates) in the order they arrived.

When the reader goes away (``demo | head``: the pipe's far end closed), the first write that
fails points the stream's file descriptor at ``os.devnull`` (so that Python's flush at exit
cannot fail again) and raises :class:`OutputClosed`, which ends the demo, torn down, with 0.
Every later write raises it again and writes nothing, whichever task it comes from.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from bot.sandbox.slack_requests import Reply, buttons
from bot.sandbox.slack_standin import Call, SlackStandIn
from bot.sandbox.textview import message_text

#: The Web API methods that put a message in front of people.
MESSAGE_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral"})


def message_of(call: Call) -> dict[str, Any]:
    """The message of a recorded call, its blocks as a list (a form post sends JSON text)."""
    body = dict(call.body)
    if isinstance(body.get("blocks"), str):
        body["blocks"] = json.loads(body["blocks"])
    return body


def is_message(call: Call) -> bool:
    return call.kind == "response" or (call.kind == "api" and call.name in MESSAGE_METHODS)


def is_channel_post(call: Call, channel: str, *, thread: str | None = None) -> bool:
    """A ``chat.postMessage`` to ``channel``: a new message, or a reply in ``thread``."""
    if call.kind != "api" or call.name != "chat.postMessage":
        return False
    return call.body.get("channel") == channel and call.body.get("thread_ts") == thread


class OutputClosed(Exception):
    """Nobody reads the demo's output any more (a closed pipe): stop, tear down, exit 0."""


class Printer:
    def __init__(
        self, out: TextIO, *, as_json: bool, names: Mapping[str, str] | None = None
    ) -> None:
        self._out = out
        self._json = as_json
        #: Channel and user ids -> names, as Slack would show them.
        self.names = dict(names or {})
        self._tty = out.isatty()
        self._prompt: str | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once a write found the reader gone; later writes raise OutputClosed."""
        return self._closed

    @property
    def is_tty(self) -> bool:
        return self._tty

    def prompt(self, text: str | None) -> None:
        """Show ``text`` as the prompt (on a terminal) until it is set to None. Output that
        arrives meanwhile replaces the prompt's line and shows the prompt again under it.
        JSON Lines get no prompt: every line of theirs is an object."""
        self._prompt = text if self._tty and not self._json else None
        if self._prompt:
            self._emit(self._prompt)

    def _write(self, text: str) -> None:
        if self._prompt:
            text = f"\r\033[K{text}{self._prompt}"
        self._emit(text)

    def _emit(self, text: str) -> None:
        if self._closed:
            raise OutputClosed
        try:
            self._out.write(text)
            self._out.flush()
        except BrokenPipeError:  # EPIPE: the reader closed its end
            self._closed = True
            self._to_devnull()
            raise OutputClosed from None

    def _to_devnull(self) -> None:
        """Point the stream's descriptor at os.devnull: what is still buffered (and Python's
        flush of stdout at exit) goes nowhere instead of failing again (the Python docs'
        advice for SIGPIPE). A stream without a descriptor has nothing to flush at exit."""
        with contextlib.suppress(OSError, ValueError):
            fd = self._out.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fd)
            finally:
                os.close(devnull)

    def _record(self, kind: str, **fields: Any) -> None:
        """One JSON Lines object (``--json``)."""
        self._write(json.dumps({"kind": kind, **fields}, ensure_ascii=False) + "\n")

    def line(self, text: str = "") -> None:
        if self._json:
            if text.strip():
                self._record("text", text=text.strip("\n"))
            return
        self._write(text + "\n")

    def step(self, text: str) -> None:
        if self._json:
            self._record("step", text=text)
            return
        self._write(f"\n\033[1m» {text}\033[0m\n" if self._tty else f"\n» {text}\n")

    def note(self, text: str) -> None:
        if self._json:
            self._record("note", text=text)
            return
        self._write(f"  · {text}\n")

    def message(self, label: str, payload: dict[str, Any]) -> None:
        if self._json:
            self._record("message", label=label, message=payload)
            return
        body = message_text(payload, self.names) or "(empty)"
        head = f"\033[36m  ← {label}\033[0m\n" if self._tty else f"  ← {label}\n"
        self._write(head + "".join(f"    {line}\n" for line in body.splitlines()))


class Feed:
    """Prints the bot's messages from the stand-in's record, each once, in order."""

    def __init__(self, standin: SlackStandIn, printer: Printer) -> None:
        self._standin = standin
        self._printer = printer
        self._seen = len(standin.calls)
        self._started = time.perf_counter()
        #: The last message shown that has buttons, with where it lives: (message,
        #: channel id or None for the user's own answer, message ts or None).
        self.last_buttons: tuple[dict[str, Any], str | None, str | None] | None = None

    def channel(self, ident: str) -> str:
        return f"#{self._printer.names.get(ident, ident)}"

    def ack(self, reply: Reply) -> None:
        """Print the bot's HTTP answer to a command (what Slack shows at once)."""
        if reply.body:
            label = f"ack in {reply.elapsed * 1000:.0f} ms (only you see this)"
            self._printer.message(label, reply.body)
            self.remember(reply.body, None, None)

    def remember(self, message: dict[str, Any], channel: str | None, ts: str | None) -> None:
        if buttons(message):
            self.last_buttons = (message, channel, ts)

    async def until(self, predicate: Callable[[Call], bool], timeout: float) -> Call:
        """Print messages as they arrive until one satisfies ``predicate``; returns it.
        Raises TimeoutError when none does within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            for call in await self._standin.calls_after(self._seen, timeout=left):
                self._seen += 1
                self.show(call)
                if predicate(call):
                    return call

    async def follow(self) -> None:
        """Print every message as it arrives, until cancelled."""
        while True:
            for call in await self._standin.calls_after(self._seen):
                self._seen += 1
                self.show(call)

    def show(self, call: Call) -> None:
        if not is_message(call):
            return
        message = message_of(call)
        label = self._label(call, message)
        self._printer.message(label, message)
        if call.kind == "response":
            self.remember(message, None, None)
        else:
            ts = str(call.body.get("ts") or call.answer.get("ts") or "")
            self.remember(message, str(call.body.get("channel", "")), ts or None)

    def _label(self, call: Call, message: dict[str, Any]) -> str:
        if call.kind == "response":
            if message.get("response_type") == "in_channel":
                return "shared in the channel by the bot (everyone sees this)"
            if message.get("replace_original") is False:
                return "answer (only you see this)"
            return "answer replacing the one above (only you see this)"
        where = self.channel(str(call.body.get("channel", "")))
        if call.name == "chat.update":
            return f"{where} · the message {call.body.get('ts', '')} updated in place"
        if call.body.get("thread_ts"):
            return f"{where} · reply in the thread of {call.body['thread_ts']}"
        ts = call.answer.get("ts")
        return f"{where} · new message from the bot" + (f" (ts {ts})" if ts else "")
