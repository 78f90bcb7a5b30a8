"""``manifest.yaml`` matches the code: command name and sub-commands, bot scopes, features.

Scope coverage works from the source, not from a hand-kept list of calls:

* every ``.<name>(`` in ``bot/*.py`` whose ``<name>`` is a public method of slack_sdk's
  ``AsyncWebClient`` (``chat_postMessage``, ``views_publish``, ...) is a Web API call; the
  method's API name (``chat.postMessage``) is read from the client method's own source (its
  ``api_call("...")``), so the sub-word spelling never has to be guessed;
* ``api_call("<method>")`` spelled out in our code counts too;
* two calls are made by the libraries, not by our code: ``auth.test`` (Bolt's ``AsyncApp``
  authorizes its token with it) and ``apps.connections.open`` (``AsyncSocketModeHandler``,
  with the app-level token). They count only while the code still uses those classes.

:data:`SCOPES` maps each method to the bot scopes it needs; a method missing from it fails the
test (add it with the scopes from its page on api.slack.com). A call through ``getattr`` or a
client stored under another type would be missed; the code has none.

The manifest is read with a small, strict YAML reader (``tests/strict_yaml.py``) rather than
PyYAML: PyYAML is not a dependency of the project (it is only installed because
huaweicloudsdkcore pulls it in), and the manifest uses a tiny subset. The reader rejects
anything outside that subset, and when PyYAML happens to be importable a test checks that both
read the same thing.
"""

from __future__ import annotations

import inspect
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import DEFAULT_COMMAND
from bot.slack import command
from tests.strict_yaml import ManifestSyntaxError, read_manifest

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "manifest.yaml"
SOURCES = sorted((ROOT / "bot").rglob("*.py"))

#: Web API method -> bot scopes it needs (api.slack.com/methods/<method>).
SCOPES: dict[str, frozenset[str]] = {
    "chat.postMessage": frozenset({"chat:write"}),
    "chat.update": frozenset({"chat:write"}),
    # The watch form's confirmation, to the person who submitted it.
    "chat.postEphemeral": frozenset({"chat:write"}),
    # Public and private channels (the watch check runs on either).
    "conversations.info": frozenset({"channels:read", "groups:read"}),
    "usergroups.users.list": frozenset({"usergroups:read"}),
    # Needs no scope: the App Home feature (checked below) is what it requires.
    "views.publish": frozenset(),
    # Needs no scope: a trigger_id from the person's command or click.
    "views.open": frozenset(),
    "auth.test": frozenset(),
    # Called with the app-level token (connections:write), not a bot scope.
    "apps.connections.open": frozenset(),
}

#: Calls the libraries make for us -> (module, class whose use implies the call).
IMPLICIT_CALLS: dict[str, tuple[str, str]] = {
    "auth.test": ("slack/app.py", "AsyncApp("),
    "apps.connections.open": ("slack/socket_mode.py", "AsyncSocketModeHandler("),
}


# --- the strict reader (tests/strict_yaml.py) ----------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a:\n\tb: 1\n",
        "a: [1, 2]\n",
        "a: &x 1\n",
        "a: |\n  text\n",
        "a: b # comment\n",
        "a: 1\na: 2\n",
        "a:\n  b: 1\n    c: 2\n",
        "a: yes\n",
        'a: "open\n',
        "a:\n",
        "  a: 1\n",
    ],
)
def test_reader_refuses_what_it_does_not_understand(text: str) -> None:
    with pytest.raises(ManifestSyntaxError):
        read_manifest(text)


def test_reader_reads_the_subset() -> None:
    text = (
        "# c\nx:\n  n: 3\n  s: plain text\n  q: \"#1 \\\"a\\\"\"\n  t: 'it''s'\n"
        "  b: false\n  l:\n    - one\n    - k: v\n      m: true\n    - chat:write\n"
    )
    assert read_manifest(text) == {
        "x": {
            "n": 3,
            "s": "plain text",
            "q": '#1 "a"',
            "t": "it's",
            "b": False,
            "l": ["one", {"k": "v", "m": True}, "chat:write"],
        }
    }


def test_reader_agrees_with_pyyaml() -> None:
    yaml = pytest.importorskip("yaml")  # not a dependency: only checked when present
    text = MANIFEST.read_text(encoding="utf-8")
    assert read_manifest(text) == yaml.safe_load(text)


# --- what the manifest declares and what the code uses --------------------------------------


@cache
def manifest() -> dict[str, Any]:
    data = read_manifest(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@cache
def source(name: str) -> str:
    return (ROOT / "bot" / name).read_text(encoding="utf-8")


def _no_comments(text: str) -> str:
    """Drop whole-line comments (a trailing one is kept: "#" also appears in strings)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


@cache
def client_methods() -> dict[str, str]:
    """``AsyncWebClient`` attribute name -> Web API method, from each method's source."""
    out = {}
    for name, func in inspect.getmembers(AsyncWebClient, inspect.isfunction):
        if name.startswith("_") or name == "api_call":
            continue
        found = re.search(r"api_call\(\s*\"([A-Za-z0-9_.]+)\"", inspect.getsource(func))
        if found:
            out[name] = found.group(1)
    return out


def called_methods() -> dict[str, set[str]]:
    """Web API method -> files that call it (see the module docstring)."""
    methods = client_methods()
    assert methods["chat_postMessage"] == "chat.postMessage"  # the mapping works at all
    calls: dict[str, set[str]] = {}
    for path in SOURCES:
        text = _no_comments(path.read_text(encoding="utf-8"))
        for name in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)\(", text):
            if name in methods:
                calls.setdefault(methods[name], set()).add(path.name)
        for method in re.findall(r"api_call\(\s*[\"']([A-Za-z0-9_.]+)[\"']", text):
            calls.setdefault(method, set()).add(path.name)
    for method, (file, marker) in IMPLICIT_CALLS.items():
        if marker in _no_comments(source(file)):
            calls.setdefault(method, set()).add(f"{file} ({marker.rstrip('(')})")
    return calls


def handled_events() -> set[str]:
    return {
        event
        for path in SOURCES
        for event in re.findall(
            r"\.event\(\s*[\"']([a-z_]+)[\"']\s*\)", _no_comments(path.read_text("utf-8"))
        )
    }


def registers(kind: str) -> bool:
    """Whether the Bolt app registers any ``app.<kind>(...)`` listener."""
    return re.search(rf"\bapp\.{kind}\(", _no_comments(source("slack/app.py"))) is not None


def test_the_slash_command_is_the_one_the_parser_answers() -> None:
    commands = manifest()["features"]["slash_commands"]
    assert [c["command"] for c in commands] == [DEFAULT_COMMAND]
    assert registers("command")
    (slash,) = commands
    assert slash["description"]
    # The parser reads Slack's escaped forms (<#C123|name>, <@U1>): Slack sends them only
    # when should_escape is on.
    assert slash["should_escape"] is True


def test_the_usage_hint_names_every_sub_command() -> None:
    hint = manifest()["features"]["slash_commands"][0]["usage_hint"]
    subcommands = set(command._SUBCOMMANDS)
    assert {"help", "watch", "unwatch", "watches", "mute", "unmute"} <= subcommands
    missing = {s for s in subcommands if not re.search(rf"(?<![\w-]){s}(?![\w-])", hint)}
    assert not missing, f"usage_hint does not mention {sorted(missing)}"
    assert "<task_id>" in hint
    assert "runs [auto|manual]" in hint  # watch, unwatch, mute and unmute runs


def test_every_called_method_is_in_the_scope_table() -> None:
    calls = called_methods()
    unknown = {m: sorted(files) for m, files in calls.items() if m not in SCOPES}
    assert not unknown, f"add these Web API methods to SCOPES: {unknown}"
    stale = set(SCOPES) - set(calls)
    assert not stale, f"SCOPES lists methods the code no longer calls: {sorted(stale)}"


def test_bot_scopes_are_exactly_the_ones_the_code_needs() -> None:
    needed = {"commands"}  # the slash command (checked above)
    for method in called_methods():
        needed |= SCOPES.get(method, frozenset())
    declared = manifest()["oauth_config"]["scopes"]["bot"]
    assert len(declared) == len(set(declared)), "a scope is listed twice"
    assert not needed - set(declared), f"missing bot scopes: {sorted(needed - set(declared))}"
    assert not set(declared) - needed, f"unused bot scopes: {sorted(set(declared) - needed)}"
    assert set(manifest()["oauth_config"]["scopes"]) == {"bot"}, "no user scopes are needed"


def test_app_home_is_enabled_exactly_when_the_code_serves_it() -> None:
    home = manifest()["features"].get("app_home", {})
    serves_home = "app_home_opened" in handled_events()
    assert home.get("home_tab_enabled", False) is serves_home
    if "views.publish" in called_methods():
        assert home.get("home_tab_enabled") is True


def test_event_subscriptions_are_the_handled_events() -> None:
    events = manifest()["settings"].get("event_subscriptions", {}).get("bot_events", [])
    assert set(events) == handled_events()


def test_interactivity_is_on_when_the_code_has_button_handlers() -> None:
    assert registers("action")
    assert manifest()["settings"]["interactivity"]["is_enabled"] is True


def test_socket_mode_is_on() -> None:
    assert manifest()["settings"]["socket_mode_enabled"] is True
    assert "apps.connections.open" in called_methods()
