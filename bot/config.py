"""Settings: the only module that reads the environment.

``Settings.from_env(os.environ)`` parses and validates every variable at once; a missing or
malformed value raises ``ConfigError`` naming the variable. Secrets are wrapped in ``Secret``
so that no repr, log line or error message can show them by accident.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from bot.errors import ConfigError, ConfigErrors
from bot.models import EP_ID_MAX, PROJECT_ID_MAX
from bot.storage.redis_url import parse_redis_url

HSS_REGIONS: frozenset[str] = frozenset(
    """cn-north-1 cn-north-2 cn-north-4 cn-north-9 cn-north-11 cn-north-12 cn-southwest-2
    cn-southwest-3 cn-east-2 cn-east-3 cn-east-4 cn-east-5 cn-south-1 cn-south-2 cn-south-4
    ap-southeast-1 ap-southeast-2 ap-southeast-3 ap-southeast-4 ap-southeast-5 na-mexico-1
    af-south-1 af-north-1 sa-brazil-1 la-south-2 la-north-2 tr-west-1 ae-ad-1 me-east-1
    my-kualalumpur-1 eu-west-101 ru-moscow-1""".split()  # noqa: SIM905 (a list is unreadable)
)

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_COMMAND = "/hss-sync"
DEFAULT_POLL_INTERVAL = 60.0
MIN_POLL_INTERVAL = 1.0
DEFAULT_TASKS_POLL = 300.0
DEFAULT_STUCK_AFTER = 7200.0
DEFAULT_MISSED_RUN_AFTER = 93_600.0

T = TypeVar("T")

#: A "missing" problem is moot when one of these variables is already reported malformed.
_SAME_SETTING: dict[str, set[str]] = {
    "HSS_REGION": {"HSS_REGION", "HSS_ENDPOINT"},
    "SLACK_SIGNING_SECRET": {"SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"},
}


class Secret:
    """A string that never shows itself in repr/str; call ``reveal()`` at the point of use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def fingerprint(self) -> str:
        """A short stable id (for Redis key names) that does not disclose the secret."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``calls`` call starts in any ``window`` seconds."""

    calls: int
    window: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``5/60s``, ``5/1m``, ``5/600ms`` or ``5/60``."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
        if not m:
            raise ValueError("expected CALLS/WINDOW such as 5/60s, 5/1m or 5/600ms")
        calls, amount, unit = int(m[1]), float(m[2]), m[3] or "s"
        window = amount * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
        if calls < 1 or window <= 0:
            raise ValueError("calls and window must both be positive")
        return cls(calls=calls, window=window)

    def __str__(self) -> str:
        return f"{self.calls}/{self.window:g}s"

    def padded(self) -> RateLimit:
        """The limit our budget enforces: a call counts when its slot is granted, but the
        gateway counts it when the request arrives, and arrivals bunch up by network jitter.
        A slightly longer window keeps us strictly inside the gateway's."""
        return RateLimit(self.calls, self.window + min(1.0, max(0.02, self.window * 0.05)))


@dataclass(frozen=True, kw_only=True)
class Settings:
    slack_bot_token: Secret | None = None
    slack_signing_secret: Secret | None = None
    slack_app_token: Secret | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    ak: Secret | None = None
    sk: Secret | None = None
    security_token: Secret | None = None
    project_id: str | None = None
    region: str | None = None
    endpoint: str | None = None
    enterprise_project_id: str | None = None
    rate_limit: RateLimit = field(default_factory=lambda: RateLimit(5, 60.0))
    #: The budget of ListImageScanTask (the sync runs), which HSS limits on its own.
    tasks_rate_limit: RateLimit = field(default_factory=lambda: RateLimit(5, 60.0))
    fresh_seconds: float = 60.0
    #: May carry a password (redis://:pw@host), so it stays out of repr.
    redis_url: str | None = field(default=None, repr=False)
    port: int = 3000
    data_dir: Path = field(default_factory=lambda: Path(".hss-sync-bot"))
    command_name: str = DEFAULT_COMMAND
    #: None: the command's own default (INFO for ``run``, WARNING for one-shot commands).
    log_level: str | None = None
    #: A watched task is refreshed at most this often (the budget may make it rarer).
    poll_interval_seconds: float = DEFAULT_POLL_INTERVAL
    #: Slack user (U.../W...) and user-group (S...) ids allowed to change watches;
    #: empty: anyone may.
    watch_admins: frozenset[str] = frozenset()
    #: While anything follows runs, they are listed at most this often (seconds).
    tasks_poll_seconds: float = DEFAULT_TASKS_POLL
    #: A followed run whose progress has not moved this long gets a "stuck" notice.
    stuck_after_seconds: float = DEFAULT_STUCK_AFTER
    #: No scheduled run this long after the last one began: a "missed" notice.
    missed_run_after_seconds: float = DEFAULT_MISSED_RUN_AFTER

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse every variable; raise ``ConfigError`` (``ConfigErrors`` when several are
        wrong) naming each one at fault."""
        settings, problems = cls.parse(environ)
        raise_all(problems)
        return settings

    @classmethod
    def parse(cls, environ: Mapping[str, str]) -> tuple[Settings, list[ConfigError]]:
        """Settings with defaults in place of malformed values, and every problem found:
        an operator fixes a broken deployment in one round, not one variable per restart.
        Each default is the field's own, above."""
        env = {k: v for k, v in environ.items() if v.strip() != ""}
        problems: list[ConfigError] = []

        def read(name: str, convert: Callable[[str], T], default: T) -> T:
            """``convert`` of variable ``name``; ``default`` when it is unset, or malformed
            (which is reported)."""
            raw = env.get(name)
            if raw is None:
                return default
            try:
                return convert(raw)
            except _Refused as exc:
                problems.append(ConfigError(name, str(exc)))
            except ValueError as exc:
                problems.append(ConfigError(name, f"{raw!r} is not valid: {exc}"))
            return default

        d = cls()  # every field's default
        # Problems are reported in the order read.
        endpoint = read("HSS_ENDPOINT", _endpoint, d.endpoint)
        region = read("HSS_REGION", lambda raw: _region(raw, endpoint), d.region)
        slack_api_url = read("SLACK_API_URL", _slack_api_url, d.slack_api_url)
        settings = cls(
            slack_bot_token=read("SLACK_BOT_TOKEN", _secret, d.slack_bot_token),
            slack_signing_secret=read("SLACK_SIGNING_SECRET", _secret, d.slack_signing_secret),
            slack_app_token=read("SLACK_APP_TOKEN", _app_token, d.slack_app_token),
            slack_api_url=slack_api_url,
            ak=read("CLOUD_SDK_AK", _secret, d.ak),
            sk=read("CLOUD_SDK_SK", _secret, d.sk),
            security_token=read("CLOUD_SDK_SECURITY_TOKEN", _secret, d.security_token),
            project_id=read("HSS_PROJECT_ID", _bounded(PROJECT_ID_MAX), d.project_id),
            region=region,
            endpoint=endpoint,
            enterprise_project_id=read(
                "HSS_ENTERPRISE_PROJECT_ID", _bounded(EP_ID_MAX), d.enterprise_project_id
            ),
            rate_limit=read("HSS_RATE_LIMIT", RateLimit.parse, d.rate_limit),
            tasks_rate_limit=read("HSS_TASKS_RATE_LIMIT", RateLimit.parse, d.tasks_rate_limit),
            fresh_seconds=read("HSS_FRESH_SECONDS", _non_negative_float, d.fresh_seconds),
            redis_url=read("REDIS_URL", _redis_url, d.redis_url),
            port=read("PORT", _port, d.port),
            data_dir=read("HSS_DATA_DIR", Path, d.data_dir),
            command_name=read("HSS_SLASH_COMMAND", _command_name, d.command_name),
            log_level=read("LOG_LEVEL", _log_level, d.log_level),
            poll_interval_seconds=read(
                "POLL_INTERVAL_SECONDS", _poll_interval, d.poll_interval_seconds
            ),
            watch_admins=read("HSS_WATCH_ADMINS", _slack_ids, d.watch_admins),
            tasks_poll_seconds=read("TASKS_POLL_SECONDS", _poll_interval, d.tasks_poll_seconds),
            stuck_after_seconds=read(
                "STUCK_AFTER_SECONDS", _positive_seconds, d.stuck_after_seconds
            ),
            missed_run_after_seconds=read(
                "MISSED_RUN_AFTER_SECONDS", _positive_seconds, d.missed_run_after_seconds
            ),
        )
        return settings, problems

    @classmethod
    def for_command(cls, environ: Mapping[str, str], *, hss: bool, slack: bool) -> Settings:
        """``from_env`` plus what the command needs, every problem reported at once. A
        malformed value is not reported a second time as missing."""
        settings, problems = cls.parse(environ)
        needed = (settings.hss_problems() if hss else []) + (
            settings.slack_problems() if slack else []
        )
        named = {p.variable for p in problems}
        for missing in needed:
            if not named & _SAME_SETTING.get(missing.variable, {missing.variable}):
                problems.append(missing)
        raise_all(problems)
        return settings

    @property
    def hss_endpoint(self) -> str:
        if self.endpoint:
            return self.endpoint
        if self.region is None:
            raise ConfigError("HSS_REGION", "missing; set HSS_REGION (or HSS_ENDPOINT)")
        domain = "myhuaweicloud.eu" if self.region == "eu-west-101" else "myhuaweicloud.com"
        return f"https://hss.{self.region}.{domain}"

    def hss_problems(self) -> list[ConfigError]:
        """What is missing to call HSS."""
        problems = [
            ConfigError(name, "missing; it is required to call HSS")
            for name, value in (
                ("CLOUD_SDK_AK", self.ak),
                ("CLOUD_SDK_SK", self.sk),
                ("HSS_PROJECT_ID", self.project_id),
            )
            if value is None
        ]
        if self.endpoint is None and self.region is None:
            problems.append(ConfigError("HSS_REGION", "missing; set HSS_REGION (or HSS_ENDPOINT)"))
        return problems

    def slack_problems(self) -> list[ConfigError]:
        """What is missing to serve Slack."""
        problems = []
        if self.slack_bot_token is None:
            problems.append(
                ConfigError("SLACK_BOT_TOKEN", "missing; the bot token (xoxb-...) is required")
            )
        if self.slack_app_token is None and self.slack_signing_secret is None:
            problems.append(
                ConfigError(
                    "SLACK_SIGNING_SECRET",
                    "missing; required in HTTP mode (or set SLACK_APP_TOKEN for Socket Mode)",
                )
            )
        return problems

    @property
    def budget_scope(self) -> str:
        """Everything sharing this scope shares one call budget: the same AK means the same
        IAM user at HSS's gateway."""
        return self.ak.fingerprint() if self.ak else "anonymous"

    @property
    def auth_scope(self) -> str:
        """An authentication lock-out belongs to one AK/SK pair: fixing either lifts it."""
        pair = Secret(
            f"{self.ak.reveal() if self.ak else ''}:{self.sk.reveal() if self.sk else ''}"
        )
        return pair.fingerprint()


def raise_all(problems: list[ConfigError]) -> None:
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigErrors(problems)


class _Refused(ValueError):
    """A malformed value, with the whole sentence saying why (other ``ValueError``s are
    prefixed with the value)."""


def _endpoint(raw: str) -> str:
    return _url(raw).rstrip("/")


def _region(raw: str, endpoint: str | None) -> str:
    if raw not in HSS_REGIONS and endpoint is None:
        raise _Refused(
            f"unknown region {raw!r}; use one of HSS's regions "
            "(for example ap-southeast-1) or set HSS_ENDPOINT"
        )
    return raw


def _slack_api_url(raw: str) -> str:
    url = _url(raw)
    return url if url.endswith("/") else url + "/"


def _secret(raw: str) -> Secret:
    return Secret(raw.strip())


def _app_token(raw: str) -> Secret:
    token = _secret(raw)
    if not token.reveal().startswith("xapp-"):
        raise _Refused("must be an app-level token starting with xapp-")
    return token


def _bounded(maximum: int) -> Callable[[str], str]:
    def check(raw: str) -> str:
        if len(raw) > maximum:
            raise _Refused(f"too long ({len(raw)} characters; at most {maximum})")
        return raw

    return check


def _number(raw: str, kind: Callable[[str], T], expected: str) -> T:
    """``kind(raw)``, with our own words instead of Python's ("invalid literal for int()")."""
    try:
        return kind(raw.strip())
    except ValueError:
        raise ValueError(expected) from None


def _non_negative_float(raw: str) -> float:
    value = _number(raw, float, "expected a number of seconds, 0 or more")
    if not value >= 0 or value == float("inf"):
        raise ValueError("expected a number of seconds, 0 or more")
    return value


def _poll_interval(raw: str) -> float:
    value = _number(raw, float, f"expected a number of seconds, {MIN_POLL_INTERVAL:g} or more")
    # Below a second would only spin: the budget allows a handful of calls a minute.
    if not MIN_POLL_INTERVAL <= value < float("inf"):
        raise ValueError(f"expected a number of seconds, {MIN_POLL_INTERVAL:g} or more")
    return value


def _positive_seconds(raw: str) -> float:
    value = _number(raw, float, "expected a number of seconds, more than 0")
    if not 0 < value < float("inf"):
        raise ValueError("expected a number of seconds, more than 0")
    return value


def _slack_ids(raw: str) -> frozenset[str]:
    ids = [item.strip() for item in raw.split(",")]
    for item in ids:
        # Names, e-mails or <@U...> mentions would silently match nobody and lock everyone
        # out of watches (or, worse, look configured when they are not): refuse them.
        if not re.fullmatch(r"[UWS][A-Z0-9]{2,30}", item):
            raise ValueError(
                f"{item!r} is not a Slack id; expected comma-separated user ids (U..., W...) "
                "or user-group ids (S...), e.g. U024BE7LH,S0614TZR7"
            )
    return frozenset(ids)


def _port(raw: str) -> int:
    value = _number(raw, int, "expected a TCP port 0-65535")
    if not 0 <= value <= 65535:
        raise ValueError("expected a TCP port 0-65535")
    return value


def _log_level(raw: str) -> str | None:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _command_name(raw: str) -> str:
    if not re.fullmatch(r"/[a-z0-9_-]{1,31}", raw):
        raise ValueError("expected a slash command such as /hss-sync")
    return raw


def _redis_url(raw: str) -> str:
    try:
        parse_redis_url(raw)
    except ValueError as exc:
        raise _Refused(str(exc)) from None
    return raw


def _url(value: str) -> str:
    problem = f"{value!r} is not an http(s) URL such as https://host[:port][/path]"
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise _Refused(problem)
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number 0-65535
    except ValueError:
        raise _Refused(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise _Refused(problem)
    return value
