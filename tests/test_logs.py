"""Log output: JSON lines, request ids that follow a slash command into the HSS call it
caused (through the real Bolt app, signed requests, the simulator), secrets masked; and the
session-wide secret check of ``tests/plugins/log_secrets.py`` (which must be able to fail)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.handlers
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.config import Settings
from bot.ops import logs
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import SimConfig
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK, MakeSim
from tests.plugins.log_secrets import SECRETS, SecretDetector, find_secrets

PLANTED = "xoxb-logs-test-token"  # one of SECRETS
ROOT = Path(__file__).resolve().parent.parent


def record(msg: str, *args: object, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("bot.test", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


# --- formats -----------------------------------------------------------------------------------


def test_json_line_has_the_fields_and_the_request_id() -> None:
    formatter = logs.JsonFormatter()
    with logs.request_scope("req123"):
        rec = record("HSS GET %s -> %d", "/v5/x", 200, event="hss_call", ms=12.5)
        logs.RequestIdFilter().filter(rec)
    line = formatter.format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["msg"] == "HSS GET /v5/x -> 200"
    assert doc["level"] == "INFO" and doc["logger"] == "bot.test"
    assert doc["request_id"] == "req123"
    assert doc["event"] == "hss_call" and doc["ms"] == 12.5
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])


def test_json_line_without_a_request_keeps_none_and_carries_a_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("bot.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert "request_id" not in doc
    assert "ValueError: boom" in doc["exc"] and "Traceback" in doc["exc"]


def test_text_line_for_people_shows_the_request_id() -> None:
    rec = record("hello")
    rec.request_id = "abc"
    assert logs.TextFormatter().format(rec).endswith("INFO bot.test: hello [req abc]")
    plain = record("hello")
    plain.request_id = None
    assert logs.TextFormatter().format(plain).endswith("INFO bot.test: hello")


def test_request_ids_follow_tasks_and_end_with_their_scope() -> None:
    async def main() -> tuple[str | None, str | None, str | None]:
        with logs.request_scope(logs.new_request_id()) as rid:
            inside = await asyncio.create_task(_current())
        return rid, inside, logs.REQUEST_ID.get()

    rid, inside, after = asyncio.run(main())
    assert rid is not None and inside == rid and after is None


async def _current() -> str | None:
    return logs.REQUEST_ID.get()


# --- secrets -----------------------------------------------------------------------------------


def test_registered_secrets_never_reach_the_output() -> None:
    secret = "s3cr3t-value-for-the-filter"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RedactingFilter(logs.Redactor([secret, "ab"])))
    handler.setFormatter(logs.JsonFormatter())
    # Its own logger, not propagating: the session's secret check must not see this.
    logger = logging.getLogger("tests.test_logs.redaction")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.info("key %s in an argument", secret)
        logger.info(f"key {secret} in the message")
        logger.info("in a field", extra={"detail": f"url?sk={secret}", "obj": [secret]})
        try:
            raise RuntimeError(f"failed with {secret}")
        except RuntimeError:
            logger.exception("in a traceback")
        logger.info("short values like ab are left alone")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert secret not in out
    assert out.count(logs.MASK) == 5
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["msg"] == f"key {logs.MASK} in an argument"
    assert lines[2]["detail"] == f"url?sk={logs.MASK}"
    assert "RuntimeError: failed with ********" in lines[3]["exc"]
    assert lines[4]["msg"] == "short values like ab are left alone"


def test_every_secret_of_the_settings_is_registered() -> None:
    settings = Settings.from_env(
        {
            "SLACK_BOT_TOKEN": "xoxb-1111-2222-botsecret",
            "SLACK_SIGNING_SECRET": "signing-secret-0123456789abcdef",
            "SLACK_APP_TOKEN": "xapp-1-A111-appsecret",
            "CLOUD_SDK_AK": "AKCONFIGTEST00000001",
            "CLOUD_SDK_SK": "SKconfig-test-secret-0000000000000000001",
            "CLOUD_SDK_SECURITY_TOKEN": "security-token-secret-0123456789",
            "REDIS_URL": "redis://:redis-pw-secret-42@localhost:6379/0",
        }
    )
    assert set(logs.secret_values(settings)) == {
        "xoxb-1111-2222-botsecret",
        "signing-secret-0123456789abcdef",
        "xapp-1-A111-appsecret",
        "AKCONFIGTEST00000001",
        "SKconfig-test-secret-0000000000000000001",
        "security-token-secret-0123456789",
        "redis-pw-secret-42",
    }


@pytest.fixture
def logging_state() -> Iterator[None]:
    """Put back what ``logs.configure`` changes on the process's loggers."""
    root = logging.getLogger()
    names = ("httpx", "bot.storage.embedded")
    saved = (root.level, list(root.handlers), {n: logging.getLogger(n).level for n in names})
    yield
    level, handlers, levels = saved
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, each in levels.items():
        logging.getLogger(name).setLevel(each)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.usefixtures("logging_state")
def test_configure_writes_json_lines_to_a_pipe_and_text_to_a_terminal() -> None:
    pipe, terminal = io.StringIO(), Terminal()
    logger = logging.getLogger("bot.tests.configure")

    handler = logs.configure("INFO", stream=pipe, secrets=[PLANTED])
    with logs.request_scope("r1"):
        logger.info("one line")
    logger.debug("not at INFO")
    logs.configure("DEBUG", stream=terminal)  # replaces the first handler
    logger.debug("now at DEBUG")

    [line] = pipe.getvalue().splitlines()
    assert json.loads(line)["msg"] == "one line"
    assert json.loads(line)["request_id"] == "r1"
    # The masking itself is tested above; logging the secret here would reach the
    # session's check through the root logger.
    [redacting] = [f for f in handler.filters if isinstance(f, logs.RedactingFilter)]
    assert redacting.redactor.redact(f"x {PLANTED} y") == f"x {logs.MASK} y"
    assert handler not in logging.getLogger().handlers
    assert "DEBUG bot.tests.configure: now at DEBUG" in terminal.getvalue()
    assert not terminal.getvalue().lstrip().startswith("{")


@pytest.mark.usefixtures("logging_state")
@pytest.mark.parametrize(("notice", "shown"), [(False, False), (True, True)])
def test_the_level_applies_to_the_embedded_redis_line_unless_a_notice_is_asked(
    notice: bool, shown: bool
) -> None:
    pipe = io.StringIO()
    logs.configure("WARNING", stream=pipe, embedded_notice=notice)
    logging.getLogger("bot.storage.embedded").info("Started an embedded Redis at x")
    logging.getLogger("bot.lookup").info("any other INFO line")
    assert [json.loads(line)["msg"] for line in pipe.getvalue().splitlines()] == (
        ["Started an embedded Redis at x"] if shown else []
    )


class WriterThreads(io.StringIO):
    """A pipe that notes which thread wrote each line."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def write(self, text: str) -> int:
        self.threads.add(threading.current_thread().name)
        return super().write(text)


@pytest.mark.usefixtures("logging_state")
def test_queued_logging_writes_the_same_lines_from_a_thread_of_its_own() -> None:
    pipe = WriterThreads()
    logger = logging.getLogger("bot.tests.queued")

    handler = logs.configure("INFO", stream=pipe, queued=True)
    with logs.request_scope("r2"):
        logger.info("first", extra={"event": "lookup", "task": "t"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("second")
    logger.info("third")
    assert isinstance(handler, logging.handlers.QueueHandler)
    handler.stop()  # type: ignore[attr-defined]

    lines = [json.loads(line) for line in pipe.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["first", "second", "third"]
    assert [line.get("request_id") for line in lines] == ["r2", "r2", None]
    assert lines[0]["event"] == "lookup" and lines[0]["task"] == "t"
    assert "RuntimeError: boom" in lines[1]["exc"]
    assert threading.current_thread().name not in pipe.threads
    handler.stop()  # type: ignore[attr-defined]  # a second stop is harmless


class StuckPipe(io.StringIO):
    """A log sink that stops taking writes until ``unblock`` is set (a full pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.unblock = threading.Event()

    def write(self, text: str) -> int:
        self.unblock.wait(10)
        return super().write(text)


@pytest.mark.usefixtures("logging_state")
def test_queued_logging_does_not_wait_for_a_stuck_sink() -> None:
    pipe = StuckPipe()
    logger = logging.getLogger("bot.tests.stuck")
    handler = logs.configure("INFO", stream=pipe, queued=True)

    caller = threading.Thread(target=lambda: [logger.info("line %d", n) for n in range(3)])
    caller.start()
    caller.join(timeout=2.0)
    stuck_meanwhile = caller.is_alive()
    pipe.unblock.set()
    handler.stop()  # type: ignore[attr-defined]

    assert not stuck_meanwhile
    msgs = [json.loads(line)["msg"] for line in pipe.getvalue().splitlines()]
    assert msgs == ["line 0", "line 1", "line 2"]


# --- a slash command's request id, down to the HSS call -------------------------------------


class Lines(logging.Handler):
    """The records of the test, as the bot writes them (JSON, request id stamped)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(logs.RequestIdFilter())
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def of(self, event: str, **fields: object) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
        ]


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Iterator[Lines]:
    caplog.set_level(logging.DEBUG)
    handler = Lines()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@pytest.fixture
async def stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[Stack]:
    config = SimConfig(
        ak=TEST_AK,
        sk=TEST_SK,
        project_id=TEST_PROJECT_ID,
        rate_limit=1000,
        task_sizes={"task-a": 20, "task-b": 20},
    )
    async with local_stack(sim_config=config, redis_url=redis_url) as running:
        yield running


async def test_a_slash_commands_request_id_is_on_the_hss_call_it_caused(
    stack: Stack, lines: Lines
) -> None:
    replies = await asyncio.gather(
        stack.user.command_text("task-a failed"), stack.user.command_text("task-b")
    )
    ids = {r.response_id for r in replies}
    await stack.standin.wait_for(lambda cs: ids <= {c.name for c in cs})

    seen = set()
    for task, text in (("task-a", "task-a failed"), ("task-b", "task-b")):
        [ack] = lines.of("ack", kind="command", text=text)
        request_id = ack["request_id"]
        [call] = lines.of("hss_call", task=task)
        [lookup] = lines.of("lookup", task=task)
        assert call["request_id"] == request_id
        assert lookup["request_id"] == request_id
        assert call["status"] == "200" and call["path"].endswith(f"/tasks/{task}/registries")
        assert "?" not in call["path"] and call["hss_request_id"]
        assert lookup["outcome"] == "refreshed" and lookup["age_s"] is not None
        seen.add(request_id)
    assert len(seen) == 2  # each command its own id
    for line in lines.lines:
        assert not find_secrets(json.dumps(line))


# --- the session's secret check ---------------------------------------------------------------


def test_the_detector_finds_a_planted_secret() -> None:
    assert find_secrets(f"token={PLANTED}") == [PLANTED]
    assert find_secrets("nothing to see") == []
    detector = SecretDetector()  # a fresh one, not the session's: the plant stays here
    detector.handle(record("fine"))
    detector.handle(record("token %s", PLANTED))
    detector.handle(record("fine", detail=f"Bearer {PLANTED}"))
    try:
        raise RuntimeError(PLANTED)
    except RuntimeError:
        exc = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    detector.handle(exc)
    assert detector.records == 4
    assert [leak.secrets for leak in detector.leaks] == [(PLANTED,)] * 3
    assert PLANTED not in detector.leaks[0].describe()


_SECRET_LITERAL = re.compile(
    r"""(?:\b(?:\w*_)?(?:secret|token|signing|sk|ak)\s*[=:]\s*"""
    r"""|"(?:CLOUD_SDK_(?:AK|SK|SECURITY_TOKEN)|SLACK_(?:BOT|APP)_TOKEN|SLACK_SIGNING_SECRET)"\s*:\s*)"""
    r'''"([^"\n]+)"''',
    re.IGNORECASE,
)


def test_every_secret_literal_of_the_tests_is_in_the_checked_list() -> None:
    """A secret added to a test (or to the demo's defaults) without adding it to
    ``SECRETS`` would go unchecked; values under 6 characters are not secrets anyone
    could recognise in a log (and the bot does not mask them either)."""
    sources = sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "bot").rglob("*.py"))
    found = {
        (m.group(1), path.name)
        for path in sources
        for m in _SECRET_LITERAL.finditer(path.read_text(encoding="utf-8"))
        if len(m.group(1)) >= logs.MIN_SECRET_LENGTH
    }
    assert found, "the pattern finds the suite's secrets"
    missing = sorted(f"{value[:4]}... in {name}" for value, name in found if value not in SECRETS)
    assert not missing, missing


async def test_cli_query_logs_json_lines_with_no_secret(
    make_hss_sim: MakeSim, redis_url: str, redis: aioredis.Redis
) -> None:
    sim = await make_hss_sim(task_sizes={"task-cli": 10})
    env = {
        "PATH": "/usr/bin:/bin",
        "CLOUD_SDK_AK": TEST_AK,
        "CLOUD_SDK_SK": TEST_SK,
        "HSS_PROJECT_ID": TEST_PROJECT_ID,
        "HSS_ENDPOINT": sim.url,
        "REDIS_URL": redis_url,
        "LOG_LEVEL": "DEBUG",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "query",
        "task-cli",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    text = stderr.decode()
    assert proc.returncode in (0, 3), text
    assert not find_secrets(text)
    docs = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(d.get("event") == "hss_call" and d.get("status") == "200" for d in docs)
    # Only the last line, the CLI's own summary for people, is not a log record.
    assert len(docs) == len(text.splitlines()) - 1


@pytest.mark.parametrize(
    ("url", "passwords"),
    [
        ("redis://:plain-password@localhost:6379/0", ["plain-password"]),
        ("redis://user:pw%2Fwith%40chars@localhost/0", ["pw%2Fwith%40chars", "pw/with@chars"]),
        # Pasted unencoded: urlsplit would stop at the '/' and leave the rest unmasked.
        ("redis://:pw/with#odd@chars@localhost:6379/0", ["pw/with#odd@chars"]),
        ("redis+sentinel://:sentinel-pw@s1:26379,s2/mymaster/0", ["sentinel-pw"]),
        ("redis://user@localhost/0", []),
        ("redis://localhost:6379/0", []),
        ("unix:///tmp/redis.sock", []),
    ],
)
def test_the_whole_redis_password_is_registered(url: str, passwords: list[str]) -> None:
    assert logs.redis_passwords(url) == sorted(passwords)


@pytest.mark.usefixtures("logging_state")
def test_bolts_client_over_token_warning_is_dropped_and_nothing_else() -> None:
    from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

    pipe = io.StringIO()
    logs.configure("INFO", stream=pipe)
    bolt = logging.getLogger("slack_bolt.AsyncApp")

    bolt.warning(warning_client_prioritized_and_token_skipped())
    bolt.warning("a warning worth reading")

    assert [json.loads(line)["msg"] for line in pipe.getvalue().splitlines()] == [
        "a warning worth reading"
    ]


COMMAND_BODY = (
    "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&command=%2Fhss-sync&text=t1+failed"
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1234%2F5678&trigger_id=1.2.3"
)
ACTION_BODY = (
    "payload=%7B%22type%22%3A%22block_actions%22%2C%22token%22%3A%22gIkuvaNzQIHg97ATvDxqgjtO"
    "%22%2C%22response_url%22%3A%22https%3A%5C%2F%5C%2Fhooks.slack.com%5C%2Factions%5C%2F1%5C"
    "%2F2%22%2C%22user%22%3A%7B%22id%22%3A%22U1%22%7D%7D"
)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"body: {COMMAND_BODY}", ["team_id=T0001", "command=%2Fhss-sync", "trigger_id=1.2.3"]),
        (f"body: {ACTION_BODY}", ["block_actions", "%22user%22"]),
        (
            '{"token": "gIkuvaNzQIHg97ATvDxqgjtO", "response_url": '
            '"https://hooks.slack.com/commands/1/2", "user_id": "U1"}',
            ['"user_id": "U1"'],
        ),
        ("posted to https://hooks.slack.com/commands/1/2 then", ["posted to", "then"]),
    ],
)
def test_slacks_request_credentials_are_masked_by_shape(text: str, kept: list[str]) -> None:
    redactor = logs.Redactor()

    masked = redactor.redact(text)

    assert redactor.found_in(text)
    assert "gIkuvaNzQIHg97ATvDxqgjtO" not in masked
    assert "1234" not in masked and "%2F1%5C" not in masked and "commands/1/2" not in masked
    for part in kept:
        assert part in masked


def test_ordinary_lines_are_left_alone() -> None:
    text = "paused the watches of 1 channel(s): token_revoked; lookup task='t' status=failed"
    assert logs.Redactor().redact(text) == text
    assert not logs.Redactor().found_in(text)


async def test_bolts_log_of_a_badly_signed_request_is_masked() -> None:
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.sandbox.localstack import SIGNING_SECRET

    app = AsyncApp(signing_secret=SIGNING_SECRET, client=AsyncWebClient(token="xoxb-socket-test"))
    records: list[logging.LogRecord] = []
    capture = logging.Handler(logging.DEBUG)
    capture.addFilter(logs.RedactingFilter(logs.Redactor()))
    capture.emit = records.append  # type: ignore[method-assign]
    bolt_logger = logging.getLogger("slack_bolt")
    bolt_logger.addHandler(capture)
    try:
        response = await app.async_dispatch(
            AsyncBoltRequest(
                body=COMMAND_BODY,
                headers={
                    "x-slack-request-timestamp": [str(int(time.time()))],
                    "x-slack-signature": ["v0=0000"],
                    "content-type": ["application/x-www-form-urlencoded"],
                },
            )
        )
    finally:
        bolt_logger.removeHandler(capture)

    assert response.status == 401
    logged = "\n".join(r.getMessage() for r in records)
    assert "command=%2Fhss-sync" in logged  # Bolt did log the body
    assert "gIkuvaNzQIHg97ATvDxqgjtO" not in logged
    assert "hooks.slack.com%2Fcommands%2F1234" not in logged
