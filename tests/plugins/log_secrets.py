"""No test secret in any log line of the test session.

A handler on the root logger sees every record the session makes (the root level is DEBUG
for the session, so nothing is dropped before it gets there; a test that raises the level
with ``caplog.set_level`` narrows that for itself). Each record is formatted the way the bot
writes it, ``bot.ops.logs.JsonFormatter``: message with its arguments, structured fields and
traceback. At the end a leak fails the session, naming the test, the logger and the secret's
first characters. Subprocesses' output is not seen here: the tests that start ``run`` or
the CLI check their stderr themselves.

``SECRETS`` is the one list of the suite's secret values; ``test_logs`` checks that every
secret-looking literal of the tests (and of the bot's demo defaults) is in it.

Under pytest-xdist each worker process has its own detector; at its end a worker hands its
count and leaks to the controller (``workeroutput``), which adds them to its own, prints the
one summary line and fails the session on any leak, as a single process does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from bot.ops.logs import JsonFormatter
from bot.sandbox.localstack import SIGNING_SECRET as DEMO_SIGNING_SECRET
from bot.sandbox.simulator import DEMO_AK, DEMO_SK
from tests.plugins.hss_sim import TEST_AK, TEST_SK

SECRETS: tuple[str, ...] = (
    # HSS access keys, secret keys and security tokens
    TEST_AK,
    TEST_SK,
    DEMO_AK,
    DEMO_SK,
    "AKCONFIGTEST00000001",  # test_config
    "SKconfig-test-secret-0000000000000000001",
    "security-token-secret-0123456789",
    "AKTESTEXAMPLE0000000",  # test_signer
    "SKtestexample0000000000000000000000000000",
    "SKwrong-but-still-secret-0000000000000000",  # test_cli
    "TEMPtoken-cli-test-security-token-0123456789",
    "TEMPtoken-0123456789-secret-security-token",  # test_hss_client
    "SK-wrong-secret-0000000000000000000000000",
    "sts-token",  # test_simulator
    "not-the-secret",  # test_lookup
    "wrong-secret-key",  # test_slack_app
    # Slack signing secrets and tokens
    DEMO_SIGNING_SECRET,
    "xoxb-demo",  # localstack
    "signing-secret-0123456789abcdef",  # test_config
    "xoxb-1111-2222-botsecret",
    "xapp-1-A111-appsecret",
    "xoxb-leaked-if-echoed",
    "xoxb-not-an-app-token",
    "xoxb-wrong-kind-of-token",  # test_cli
    "run-test-signing-secret",  # test_run
    "run-test-secret",
    "xoxb-run-test",
    "xapp-run-test",
    "replica-test-signing-secret",  # test_replicas
    "xoxb-replica-test-token",
    "run-replica-test-signing-secret",  # test_run_replicas
    "xoxb-run-replica-test-token",
    "xoxb-test",  # test_outbox
    "xoxb-socket-test",  # test_socket_mode
    "xapp-1-socket-test",
    "logs-test-signing-secret",  # test_logs, test_metrics, test_health
    "xoxb-logs-test-token",
    "s3cr3t-value-for-the-filter",
    "redis-pw-secret-42",
)


def find_secrets(text: str, secrets: Iterable[str] = SECRETS) -> list[str]:
    """The secrets that occur in ``text``, pure."""
    return [secret for secret in secrets if secret in text]


def hint(secret: str) -> str:
    """Enough to tell which secret leaked without printing it."""
    return f"{secret[:4]}... ({len(secret)} characters)"


@dataclass(frozen=True, slots=True)
class Leak:
    test: str
    logger: str
    level: str
    secrets: tuple[str, ...]

    def describe(self) -> str:
        which = ", ".join(hint(s) for s in self.secrets)
        return f"{self.test}: {self.level} record of {self.logger!r} holds {which}"


class SecretDetector(logging.Handler):
    """Formats every record it is given and remembers the ones holding a secret."""

    MAX_LEAKS = 50

    def __init__(self, secrets: Iterable[str] = SECRETS) -> None:
        super().__init__(level=logging.NOTSET)
        self.secrets = tuple(secrets)
        self.setFormatter(JsonFormatter())
        self.test = "(outside any test)"
        self.records = 0
        self.leaks: list[Leak] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted: look at its raw parts
            text = f"{record.msg!r} {record.args!r} {record.__dict__!r}"
        found = find_secrets(text, self.secrets)
        if found and len(self.leaks) < self.MAX_LEAKS:
            leak = Leak(self.test, record.name, record.levelname, tuple(found))
            self.leaks.append(leak)


_detector: SecretDetector | None = None
#: The key of a worker's report in xdist's ``workeroutput``.
_OUTPUT = "log_secrets"
_root_level = logging.WARNING


def pytest_sessionstart(session: pytest.Session) -> None:
    global _detector, _root_level
    _detector = SecretDetector()
    root = logging.getLogger()
    _root_level = root.level
    root.addHandler(_detector)
    root.setLevel(logging.DEBUG)


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if _detector is not None:
        _detector.test = nodeid


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if _detector is not None:
        _detector.test = f"(after {nodeid})"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _detector is None:
        return
    root = logging.getLogger()
    root.removeHandler(_detector)
    root.setLevel(_root_level)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports and fails
        leaks = [[x.test, x.logger, x.level, list(x.secrets)] for x in _detector.leaks]
        workeroutput[_OUTPUT] = {"records": _detector.records, "leaks": leaks}
        return
    if _detector.leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist's controller, as each worker ends: take over the worker's count and leaks."""
    report = getattr(node, "workeroutput", {}).get(_OUTPUT)
    if _detector is None or report is None:
        return
    _detector.records += report["records"]
    for test, logger, level, secrets in report["leaks"]:
        if len(_detector.leaks) < _detector.MAX_LEAKS:
            _detector.leaks.append(Leak(test, logger, level, tuple(secrets)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _detector is None:
        return
    if not _detector.leaks:
        terminalreporter.write_line(
            f"log secrets: none in {_detector.records} log records", bold=False
        )
        return
    terminalreporter.section("secrets in log records", sep="=", red=True, bold=True)
    for leak in _detector.leaks:
        terminalreporter.write_line(leak.describe(), red=True)
    terminalreporter.write_line(
        "the session fails: a log line must never hold a secret (tests/plugins/log_secrets.py)",
        red=True,
        bold=True,
    )
