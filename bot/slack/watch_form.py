"""The "Add a watch" modal, pure: the view, and a submission read back into the command the
slash command would have parsed.

The form asks for runs to follow (all, auto, manual) *or* a task (an id or a reference such
as ``latest``), a channel, registry types and a registry name. A submission is untrusted:
every value is re-checked here, and the command is built by the slash command's own parsers
(:func:`~bot.slack.watch_command.parse_watch`, :func:`~bot.slack.run_watch_command.
parse_watch_runs`) from the same words a person would type, so the form accepts exactly what
the command accepts. What is wrong is said on the field it belongs to
(``response_action: errors``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from bot.errors import CommandError
from bot.models import REGISTRY_NAME_MAX, REGISTRY_TYPES, TASK_ID_MAX
from bot.slack.run_watch_command import KIND_WORDS, RUNS_WORD, AddRunWatch, parse_watch_runs
from bot.slack.text import CHANNEL_ID
from bot.slack.watch_command import AddWatch, parse_watch
from bot.slack.words import Word, parse_types, validate_name

CALLBACK_ADD_WATCH = "hss_add_watch"
ACTION_HOME_ADD_WATCH = "hss_home_add_watch"
#: The input blocks; each has one element, whose action id is ``VALUE``.
BLOCK_RUNS, BLOCK_TASK, BLOCK_CHANNEL, BLOCK_TYPES, BLOCK_NAME = (
    "runs",
    "task",
    "channel",
    "types",
    "name",
)
VALUE = "value"
ALL_RUNS_CHOICE = "all"
_RUN_CHOICES = {
    ALL_RUNS_CHOICE: "All runs (scheduled and manual)",
    "auto": "Scheduled (auto) runs",
    "manual": "Manual runs",
}
#: Slack shows a field's error under it; long ones are cut.
_ERROR_MAX = 150


@dataclass(frozen=True, slots=True)
class OpenWatchForm:
    """``/hss-sync watch`` with no arguments: open the form."""


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submission read back: the command, with the channel picked in the form."""

    command: AddWatch | AddRunWatch
    #: Opened from the App Home (which is then shown again with the new watch).
    from_home: bool


class FormErrors(Exception):
    """What is wrong with a submission, by input block."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def field_error(message: str) -> str:
    """A command's error sentence as a form field shows it: without the usage line."""
    text = message.split(" Usage: ")[0]
    return text if len(text) <= _ERROR_MAX else text[: _ERROR_MAX - 1] + "…"


# --- the view ----------------------------------------------------------------------------------


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def _option(value: str, label: str) -> dict[str, Any]:
    return {"text": _plain(label), "value": value}


def _input(block_id: str, label: str, element: dict[str, Any], *, hint: str = "") -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": block_id,
        "label": _plain(label),
        "element": {**element, "action_id": VALUE},
        "optional": block_id != BLOCK_CHANNEL,
    }
    if hint:
        block["hint"] = _plain(hint)
    return block


def form_view(*, channel: str | None, from_home: bool) -> dict[str, Any]:
    """The modal for ``views.open``; ``channel`` is the picker's default (a channel id)."""
    picker: dict[str, Any] = {
        "type": "conversations_select",
        "placeholder": _plain("Where alerts go"),
        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
    }
    if channel is not None and CHANNEL_ID.fullmatch(channel):
        picker["initial_conversation"] = channel
    runs = {
        "type": "static_select",
        "placeholder": _plain("Which runs"),
        "options": [_option(v, label) for v, label in _RUN_CHOICES.items()],
    }
    task = {
        "type": "plain_text_input",
        "max_length": TASK_ID_MAX,
        "placeholder": _plain("A task id, or latest, latest-auto, latest-manual"),
    }
    types = {
        "type": "multi_static_select",
        "placeholder": _plain("All types"),
        "options": [_option(t, t) for t in REGISTRY_TYPES],
    }
    name = {
        "type": "plain_text_input",
        "max_length": REGISTRY_NAME_MAX,
        "placeholder": _plain("All registries"),
    }
    return {
        "type": "modal",
        "callback_id": CALLBACK_ADD_WATCH,
        "title": _plain("Add a watch"),
        "submit": _plain("Watch"),
        "close": _plain("Cancel"),
        "private_metadata": json.dumps({"home": from_home}),
        "blocks": [
            _input(
                BLOCK_RUNS,
                "Follow sync runs",
                runs,
                hint="Each new run from now on; runs that exist now are the baseline.",
            ),
            _input(BLOCK_TASK, "…or watch one task", task),
            _input(BLOCK_CHANNEL, "Channel", picker),
            _input(BLOCK_TYPES, "Registry types", types),
            _input(BLOCK_NAME, "Registry name", name),
        ],
    }


# --- a submission ------------------------------------------------------------------------------


def _element(values: Mapping[str, Any], block_id: str) -> Mapping[str, Any]:
    block = values.get(block_id)
    element = block.get(VALUE) if isinstance(block, Mapping) else None
    return element if isinstance(element, Mapping) else {}


def _text(values: Mapping[str, Any], block_id: str) -> str | None:
    value = _element(values, block_id).get("value")
    return value.strip() or None if isinstance(value, str) else None


def _run_choice(values: Mapping[str, Any]) -> tuple[str | None, bool]:
    """The runs chosen (None: none) and whether the choice is one the form offers."""
    selected = _element(values, BLOCK_RUNS).get("selected_option")
    if selected is None:
        return None, True
    value = selected.get("value") if isinstance(selected, Mapping) else None
    return (value, True) if value in _RUN_CHOICES else (None, False)


def _types(values: Mapping[str, Any]) -> list[str]:
    """The registry types chosen (CommandError when the submission is not a list of them)."""
    selected = _element(values, BLOCK_TYPES).get("selected_options")
    if selected is None:
        return []
    if isinstance(selected, list) and len(selected) <= len(REGISTRY_TYPES):
        found = [o.get("value") if isinstance(o, Mapping) else None for o in selected]
        strings = [f for f in found if isinstance(f, str)]
        if len(strings) == len(found):
            return strings
    raise CommandError("Choose registry types from the list.")


def _from_home(metadata: object) -> bool:
    """Where the form was opened; anything but our own metadata counts as a command."""
    try:
        parsed = json.loads(metadata) if isinstance(metadata, str) and len(metadata) < 100 else {}
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("home") is True


def _what(values: Mapping[str, Any], errors: dict[str, str]) -> tuple[str | None, str | None]:
    """The runs chosen and the task typed, once it is clear that exactly one was given."""
    runs, offered = _run_choice(values)
    task = _text(values, BLOCK_TASK)
    if not offered:
        errors[BLOCK_RUNS] = "Choose all, scheduled (auto) or manual runs."
    elif runs is not None and task is not None:
        errors[BLOCK_TASK] = "Give a task or choose runs above, not both."
    elif runs is None and task is None:
        errors[BLOCK_RUNS] = "Choose which runs to follow, or give a task below."
    else:
        try:
            if task is not None and task.casefold() == RUNS_WORD:
                raise CommandError("To follow runs, choose them above instead.")
            if task is not None:
                parse_watch([Word("watch"), Word(task)])
        except CommandError as exc:
            errors[BLOCK_TASK] = field_error(exc.user_message())
    return runs, task


def _channel(values: Mapping[str, Any], errors: dict[str, str]) -> str:
    channel = _element(values, BLOCK_CHANNEL).get("selected_conversation")
    if isinstance(channel, str) and CHANNEL_ID.fullmatch(channel):
        return channel
    errors[BLOCK_CHANNEL] = "Pick the channel that alerts go to."
    return ""


def _filters(values: Mapping[str, Any], errors: dict[str, str]) -> list[Word]:
    """The filters as the words a person would type after the task or the runs."""
    words: list[Word] = []
    try:
        types = _types(values)
        if types:
            words.append(Word("type=" + ",".join(parse_types(types))))
    except CommandError as exc:
        errors[BLOCK_TYPES] = field_error(exc.user_message())
    name = _text(values, BLOCK_NAME)
    try:
        if name is not None:
            words.append(Word("name=" + validate_name(name)))
    except CommandError as exc:
        errors[BLOCK_NAME] = field_error(exc.user_message())
    return words


def read_submission(view: Mapping[str, Any]) -> Submitted:
    """The command a submission stands for; :class:`FormErrors` for what is wrong."""
    state = view.get("state")
    raw = state.get("values") if isinstance(state, Mapping) else None
    values: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    errors: dict[str, str] = {}
    runs, task = _what(values, errors)
    channel = _channel(values, errors)
    filters = _filters(values, errors)
    if errors:
        raise FormErrors(errors)
    command: AddWatch | AddRunWatch
    if task is not None:
        command = parse_watch([Word("watch"), Word(task), *filters])
    else:
        kind = [Word(runs)] if runs in KIND_WORDS else []
        command = parse_watch_runs([Word("watch"), Word(RUNS_WORD), *kind, *filters])
    from_home = _from_home(view.get("private_metadata"))
    return Submitted(command=replace(command, channel=channel), from_home=from_home)
