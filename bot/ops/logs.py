"""Log output: JSON lines (or plain text on a terminal), request ids, secrets masked.

- One JSON object per line: ``ts`` (UTC), ``level``, ``logger``, ``msg``, ``request_id`` when
  the line belongs to a Slack request (or a background refresh), the structured fields a call
  site passes as ``extra=`` (``event``, ``task``, ``ms``...), and ``exc`` for a traceback.
- A request id is set (:func:`request_scope`) when a Slack request arrives; asyncio copies
  context variables into tasks created under it, so the HSS call a slash command causes,
  however deep in a spawned task, logs the command's id.
- Secrets: settings hold them as ``config.Secret`` (whose repr hides them); on top of that
  :class:`RedactingFilter` masks every registered secret value in the message, its
  arguments, structured fields and traceback text before any handler formats the record.

Only :func:`configure` touches the logging tree (called by the CLI).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import queue
import re
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import unquote

from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

from bot.config import Secret, Settings

MASK = "********"
#: Shorter values are not masked: they would shred ordinary words out of every line, and no
#: real token, key or password is this short.
MIN_SECRET_LENGTH = 6

REQUEST_ID: ContextVar[str | None] = ContextVar("hss_sync_request_id", default=None)

#: Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}


# --- request ids ---


def new_request_id(prefix: str = "") -> str:
    """A short random id: unique enough to grep one request out of a day's logs."""
    return f"{prefix}{uuid.uuid4().hex[:16]}"


@contextlib.contextmanager
def request_scope(request_id: str) -> Iterator[str]:
    """Lines logged inside (and in tasks created inside) carry ``request_id``."""
    token = REQUEST_ID.set(request_id)
    try:
        yield request_id
    finally:
        REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Stamps the current request id on the record while still in the logging call's
    context (a handler formatting later, or on another thread, would not see it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


# --- secrets ---


#: Credentials in every request Slack sends, which no setting names: the verification
#: ``token`` and the ``response_url`` that can post for 30 minutes. Bolt logs a request's raw
#: body when its signature check fails (a wrong SLACK_SIGNING_SECRET: every request), so
#: they are masked by shape, as a form field, a JSON field, URL-encoded JSON (an
#: interaction's ``payload=``) and as a bare hooks.slack.com URL.
_SLACK_CREDENTIALS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(token|response_url)=[^&\s\"']+"), rf"\1={MASK}"),
    (re.compile(r'"(token|response_url)"\s*:\s*"[^"]*"'), rf'"\1": "{MASK}"'),
    (
        re.compile(
            r"%22(token|response_url)%22%3A%22(?:%(?!22)[0-9A-Fa-f]{2}|[^%&\s\"'])*",
            re.IGNORECASE,
        ),
        rf"%22\1%22%3A%22{MASK}",
    ),
    (re.compile(r"hooks\.slack\.com/[^\s\"'&]+"), f"hooks.slack.com/{MASK}"),
)


class Redactor:
    """Masks known secret values in text, longest first so a secret containing another is
    masked whole, and Slack's per-request credentials by their shape."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        self._secrets.update(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        for shape, masked in _SLACK_CREDENTIALS:
            text = shape.sub(masked, text)
        return text

    def found_in(self, text: str) -> bool:
        if self._pattern is not None and self._pattern.search(text) is not None:
            return True
        return any(shape.search(text) for shape, _ in _SLACK_CREDENTIALS)


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold: each ``Secret`` field (so a new one is covered
    without a change here) and a password inside ``REDIS_URL``."""
    values = [
        v.reveal() for f in fields(settings) if isinstance(v := getattr(settings, f.name), Secret)
    ]
    if settings.redis_url:
        values += redis_passwords(settings.redis_url)
    return values


def redis_passwords(url: str) -> list[str]:
    """The password in a Redis URL, as written and percent-decoded. Read by hand, not with
    ``urlsplit``: a password pasted unencoded (with '/', '#' or '@') would come out cut
    short, and its rest would be logged."""
    match = re.match(r"^[A-Za-z0-9+.-]+://(.*)@", url)  # greedy: up to the last '@'
    if match is None:
        return []
    _, colon, password = match.group(1).partition(":")
    if not colon or not password:
        return []
    return sorted({password, unquote(password)})


class RedactingFilter(logging.Filter):
    """Masks registered secrets in a record before it is formatted: the rendered message
    (arguments included), string ``extra=`` fields, the traceback and the stack."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken call site: the handler reports it, unformatted
            return True
        if self.redactor.found_in(message):
            record.msg, record.args = self.redactor.redact(message), None
        for key, value in list(record.__dict__.items()):
            if key in _STANDARD or value is None or isinstance(value, bool | int | float):
                continue
            # Anything else is written as text: mask that text, whatever object it came from.
            setattr(
                record, key, self.redactor.redact(value if isinstance(value, str) else str(value))
            )
        if record.exc_info and not record.exc_text:
            # Rendered here, once: every formatter reuses ``exc_text`` instead of the
            # exception, whose message or locals might carry a secret.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


# --- formats ---


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            doc["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in doc and value is not None:
                doc[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """For people at a terminal: the classic line, with the request id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if not request_id:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [req {request_id}]{newline}{rest}"


def _utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- set-up ---


class _BotHandler(logging.StreamHandler[TextIO]):
    """Marks the handler :func:`configure` installed, so configuring again replaces it."""


class _QueuedBotHandler(logging.handlers.QueueHandler):
    """Formats (request id, masking) in the thread that logs, whose context holds the
    request id, and hands the finished line to a writer thread: a slow terminal or a
    back-pressured log pipe then never stalls the event loop (measured: a terminal doubled
    the ack p99, bench/RESULTS.md section 6)."""

    def __init__(self, out: TextIO) -> None:
        lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        super().__init__(lines)
        writer = logging.StreamHandler(out)
        writer.setFormatter(logging.Formatter("%(message)s"))
        self._listener: logging.handlers.QueueListener | None = logging.handlers.QueueListener(
            lines, writer
        )
        self._listener.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        """Write what is queued and end the writer thread (idempotent)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()


def configure(
    level: str,
    *,
    stream: TextIO | None = None,
    json_lines: bool | None = None,
    secrets: Iterable[str] = (),
    queued: bool = False,
    embedded_notice: bool = False,
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr): JSON lines unless it is a terminal
    (``json_lines`` decides otherwise), request ids stamped, ``secrets`` masked; written by
    a thread of its own when ``queued`` (see ``_QueuedBotHandler``).

    ``level`` applies to every logger. ``embedded_notice`` lets one INFO line through below
    it: which embedded Redis is in use and where its data is (for a default level chosen by
    the CLI, never one a person set with ``LOG_LEVEL``)."""
    out = sys.stderr if stream is None else stream
    if json_lines is None:
        json_lines = not _is_terminal(out)
    handler: logging.Handler = _QueuedBotHandler(out) if queued else _BotHandler(out)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter(Redactor(secrets)))
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _BotHandler | _QueuedBotHandler)]:
        root.removeHandler(old)
        if isinstance(old, _QueuedBotHandler):
            old.stop()
    root.addHandler(handler)
    root.setLevel(level)
    # Set either way, so that configuring again undoes an earlier notice.
    embedded = logging.getLogger("bot.storage.embedded")
    embedded.setLevel(logging.INFO if embedded_notice else logging.NOTSET)
    if logging.getLevelName(level) != logging.DEBUG:
        # httpx logs every request at INFO; our HSS call line already says all of it.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    # Bolt warns at every start that it prefers our client to SLACK_BOT_TOKEN: we build the
    # client from that very token (for its retries and base URL), so there is nothing to do.
    bolt = logging.getLogger("slack_bolt.AsyncApp")
    if not any(isinstance(f, _DropMessage) for f in bolt.filters):
        bolt.addFilter(_DropMessage(warning_client_prioritized_and_token_skipped()))
    return handler


class _DropMessage(logging.Filter):
    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
