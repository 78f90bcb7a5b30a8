"""What a request must look like before anything reads it: its signature, its body as Bolt
will parse it, and the type of every field that Bolt or our listeners read.

Bolt parses the body and reads it (team, user, enterprise, actions, view, event) before it
checks the signature, and trusts its shape: a JSON ``[1]`` or a ``user`` that is a string
raised deep inside it, answered 500 and logged a traceback. Here the signature is checked
first (on the raw bytes), then the body is parsed exactly as Bolt would parse it and
checked field by field, so Bolt and the listeners see only bodies of the shape Slack sends.
Every refusal is one short, fixed phrase: nothing of the request is echoed. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from slack_sdk.signature import SignatureVerifier

#: Slack's timestamps are whole seconds; "1e3", "abc" or "" are not.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class Refused(Exception):
    """A request refused before Bolt sees it: ``status`` (400 or 401) and a short reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_signature(
    verifier: SignatureVerifier, body: bytes, timestamp: str | None, signature: str | None
) -> None:
    """Raise ``Refused(401)`` unless the request is signed with our secret, recently."""
    if timestamp is None or not _TIMESTAMP.fullmatch(timestamp):
        raise Refused(401, "no valid X-Slack-Request-Timestamp")
    if not signature:
        raise Refused(401, "no X-Slack-Signature")
    if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
        raise Refused(401, "bad or expired signature")


def parse_body(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The body, which must be a JSON object, or a form (a slash command), or a form whose
    ``payload`` is a JSON object (an interaction); ``Refused(400)`` otherwise.

    As ``slack_bolt.request.internals.parse_body`` reads it, but for one thing: Bolt takes
    any form whose text merely contains "payload" for an interaction without a payload, so
    ``/hss-sync payload-task`` reached no listener (404). Here only a ``payload`` field makes
    an interaction; the app hands Bolt this reading (``ObservedApp.handle_http``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "body is not UTF-8") from None
    if not text:
        return {}
    if content_type == "application/json" or text.startswith("{"):
        return _json_object(text, "body")
    form = dict(parse_qsl(text, keep_blank_values=True))
    payload = form.get("payload")
    return form if payload is None else _json_object(payload, "payload")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except RecursionError:
        raise Refused(400, f"{what} is nested too deeply") from None
    except ValueError:
        raise Refused(400, f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise Refused(400, f"{what} is not a JSON object")
    return doc


# --- the shape of a body ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """What one field may hold: one of ``kinds`` (null is always allowed unless
    ``required``); for objects, their own ``fields``; for lists, what each item is (never
    null)."""

    kinds: tuple[type, ...]
    required: bool = False
    fields: Mapping[str, Field] = field(default_factory=dict)
    items: Field | None = None


_TEXT = Field((str,))
_REF = Field((str, dict), fields={"id": _TEXT, "team_id": _TEXT, "enterprise_id": _TEXT})
_USER = Field((dict,), fields={"id": Field((str,), required=True), "team_id": _TEXT})
_MESSAGE = Field((dict,), fields={"user": _REF, "thread_ts": _TEXT, "subtype": _TEXT})
_AUTHORIZATION = Field(
    (dict,),
    fields={
        "enterprise_id": _TEXT,
        "team_id": _TEXT,
        "user_id": _TEXT,
        "is_enterprise_install": Field((bool, str)),
    },
)
_ACTION = Field(
    (dict,),
    fields={
        "action_id": Field((str,), required=True),
        "block_id": _TEXT,
        "value": _TEXT,
        "type": _TEXT,
    },
)
_EVENT = Field(
    (dict,),
    fields={
        "type": _TEXT,
        "subtype": _TEXT,
        "user": _REF,
        "user_id": _TEXT,
        "channel": _REF,
        "channel_type": _TEXT,
        "tab": _TEXT,
        "team": _TEXT,
        "user_team": _TEXT,
        "thread_ts": _TEXT,
        "bot_id": _TEXT,
        "function_execution_id": _TEXT,
        "item": Field((dict,), fields={"channel": _REF}),
        "message": _MESSAGE,
        "previous_message": _MESSAGE,
        "assistant_thread": Field((dict,), fields={"channel_id": _TEXT, "thread_ts": _TEXT}),
    },
)
_VIEW = Field(
    (dict,),
    fields={
        "type": _TEXT,
        "callback_id": _TEXT,
        "id": _TEXT,
        "team_id": _TEXT,
        "app_installed_team_id": _TEXT,
    },
)
_TEXTS = [
    "type",
    "command",
    "text",
    "user_id",
    "user_name",
    "channel_id",
    "channel_name",
    "team_id",
    "team_domain",
    "enterprise_id",
    "api_app_id",
    "token",
    "response_url",
    "trigger_id",
    "callback_id",
    "action_id",
    "thread_ts",
    "message_ts",
    "function_execution_id",
    "bot_access_token",
    "challenge",
    "ssl_check",
]
#: Every top-level field that Bolt's context builder, its matchers and middleware, or our
#: listeners read.
BODY = Field(
    (dict,),
    fields={
        **{name: _TEXT for name in _TEXTS},
        "user": _USER,
        "team": _REF,
        "enterprise": _REF,
        "channel": _REF,
        "is_enterprise_install": Field((bool, str)),
        "is_ext_shared_channel": Field((bool,)),
        "authorizations": Field((list,), items=_AUTHORIZATION),
        "response_urls": Field((list,), items=Field((dict,), fields={"response_url": _TEXT})),
        "actions": Field((list,), items=_ACTION),
        "event": _EVENT,
        "view": _VIEW,
        "message": _MESSAGE,
        "previous_message": _MESSAGE,
        "container": Field((dict,)),
        "state": Field((dict,)),
        "item": Field((dict,), fields={"channel": _REF}),
        "function_data": Field((dict,), fields={"execution_id": _TEXT, "inputs": Field((dict,))}),
        "assistant_thread": Field((dict,), fields={"channel_id": _TEXT, "thread_ts": _TEXT}),
    },
)

_INTERACTIVE = {"block_actions", "view_submission", "view_closed", "shortcut", "message_action"}
_CALLBACK_TYPES = {
    "shortcut",
    "message_action",
    "interactive_message",
    "dialog_submission",
    "dialog_cancellation",
    "dialog_suggestion",
    "workflow_step_edit",
}


def shape_problem(body: object) -> str | None:
    """What is wrong with a parsed body's shape, as a short fixed phrase; None if nothing."""
    problem = _field_problem(body, BODY, "body")
    if problem is not None or not isinstance(body, dict):
        return problem
    return _kind_problem(body)


def _field_problem(value: object, spec: Field, path: str) -> str | None:
    if value is None:
        return f"{path} is missing" if spec.required else None
    if not isinstance(value, spec.kinds):
        return f"{path} has the wrong type"
    if isinstance(value, dict):
        for name, inner in spec.fields.items():
            problem = _field_problem(value.get(name), inner, f"{path}.{name}")
            if problem is not None:
                return problem
    if isinstance(value, list) and spec.items is not None:
        for item in value:
            # A null item is never Slack's, and Bolt indexes the first one without looking.
            problem = (
                f"{path}[] has a null item"
                if item is None
                else _field_problem(item, spec.items, f"{path}[]")
            )
            if problem is not None:
                return problem
    return None


def _kind_problem(body: dict[str, Any]) -> str | None:
    """What each kind of request must carry: the parts Bolt indexes without looking."""
    kind = body.get("type")
    if kind in _INTERACTIVE and body.get("user") is None:
        return f"{kind} without a user"
    if kind == "block_actions" and not body.get("actions"):
        return "block_actions without actions"
    if kind in ("view_submission", "view_closed"):
        view = body.get("view") or {}
        if not (isinstance(view.get("type"), str) and isinstance(view.get("callback_id"), str)):
            return f"{kind} without view.type and view.callback_id"
    if kind in _CALLBACK_TYPES and not isinstance(body.get("callback_id"), str):
        return f"{kind} without a callback_id"
    if kind == "block_suggestion" and not isinstance(body.get("action_id"), str):
        return "block_suggestion without an action_id"
    if kind == "event_callback":
        event = body.get("event") or {}
        if not isinstance(event.get("type"), str):
            return "event_callback without event.type"
    return None


def user_of(body: Mapping[str, Any]) -> str:
    """The Slack user a request is from ("" when it names none), whatever its kind."""
    user = body.get("user")
    if isinstance(user, dict):
        user = user.get("id")
    if not isinstance(user, str):
        user = body.get("user_id")
    return user if isinstance(user, str) else ""


def first_action(body: Mapping[str, Any]) -> dict[str, Any]:
    """The clicked element of a ``block_actions`` body ({} when there is none)."""
    actions = body.get("actions")
    if isinstance(actions, list) and actions and isinstance(actions[0], dict):
        return actions[0]
    return {}


def id_of(body: Mapping[str, Any], name: str) -> str:
    """``body[name]["id"]`` (or ``body[name]`` itself when Slack sends a bare id), else ""."""
    value = body.get(name)
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else ""
