"""``Settings.from_env``: every variable's default, accepted forms and refusals.

Each malformed value must raise ``ConfigError`` naming exactly the variable at fault (the CLI
prints that one line and exits 2), and no secret may show in a repr, str or error message.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from bot.config import DEFAULT_COMMAND, DEFAULT_SLACK_API_URL, RateLimit, Secret, Settings
from bot.errors import ConfigError, ConfigErrors

AK = "AKCONFIGTEST00000001"
SK = "SKconfig-test-secret-0000000000000000001"
BOT_TOKEN = "xoxb-1111-2222-botsecret"
SIGNING = "signing-secret-0123456789abcdef"
APP_TOKEN = "xapp-1-A111-appsecret"
SECURITY_TOKEN = "security-token-secret-0123456789"
REDIS_PASSWORD = "redis-pw-secret-42"

FULL_ENV: dict[str, str] = {
    "SLACK_BOT_TOKEN": BOT_TOKEN,
    "SLACK_SIGNING_SECRET": SIGNING,
    "SLACK_APP_TOKEN": APP_TOKEN,
    "CLOUD_SDK_AK": AK,
    "CLOUD_SDK_SK": SK,
    "CLOUD_SDK_SECURITY_TOKEN": SECURITY_TOKEN,
    "HSS_PROJECT_ID": "0123456789abcdef0123456789abcdef",
    "HSS_REGION": "ap-southeast-1",
    "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
}
SECRETS = (AK, SK, BOT_TOKEN, SIGNING, APP_TOKEN, SECURITY_TOKEN, REDIS_PASSWORD)


def config_error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    return info.value


# --- defaults and accepted values ----------------------------------------------------------


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env({})
    assert (s.slack_bot_token, s.slack_signing_secret, s.slack_app_token) == (None, None, None)
    assert (s.ak, s.sk, s.security_token) == (None, None, None)
    assert (s.project_id, s.region, s.endpoint, s.enterprise_project_id) == (None,) * 4
    assert s.slack_api_url == DEFAULT_SLACK_API_URL == "https://slack.com/api/"
    assert s.rate_limit == RateLimit(calls=5, window=60.0)
    assert s.tasks_rate_limit == RateLimit(calls=5, window=60.0)
    assert s.fresh_seconds == 60.0
    assert s.redis_url is None
    assert s.port == 3000
    assert s.data_dir == Path(".hss-sync-bot")
    assert s.command_name == DEFAULT_COMMAND
    assert s.poll_interval_seconds == 60.0
    assert s.watch_admins == frozenset()
    assert (s.tasks_poll_seconds, s.stuck_after_seconds) == (300.0, 7200.0)
    assert s.missed_run_after_seconds == 93_600.0


@pytest.mark.parametrize(
    ("name", "value", "attr", "expected"),
    [
        ("SLACK_BOT_TOKEN", BOT_TOKEN, "slack_bot_token", Secret(BOT_TOKEN)),
        ("SLACK_BOT_TOKEN", f"  {BOT_TOKEN}\n", "slack_bot_token", Secret(BOT_TOKEN)),
        ("SLACK_SIGNING_SECRET", SIGNING, "slack_signing_secret", Secret(SIGNING)),
        ("SLACK_APP_TOKEN", APP_TOKEN, "slack_app_token", Secret(APP_TOKEN)),
        ("SLACK_API_URL", "http://127.0.0.1:9/api/", "slack_api_url", "http://127.0.0.1:9/api/"),
        (
            "SLACK_API_URL",
            "https://slack.example/api",
            "slack_api_url",
            "https://slack.example/api/",
        ),
        ("CLOUD_SDK_AK", AK, "ak", Secret(AK)),
        ("CLOUD_SDK_SK", SK, "sk", Secret(SK)),
        ("CLOUD_SDK_SECURITY_TOKEN", SECURITY_TOKEN, "security_token", Secret(SECURITY_TOKEN)),
        ("HSS_PROJECT_ID", "p" * 256, "project_id", "p" * 256),
        ("HSS_REGION", "cn-north-4", "region", "cn-north-4"),
        ("HSS_ENDPOINT", "https://hss.example.com/", "endpoint", "https://hss.example.com"),
        ("HSS_ENDPOINT", "http://127.0.0.1:8931", "endpoint", "http://127.0.0.1:8931"),
        ("HSS_ENDPOINT", "https://gw.example/hss", "endpoint", "https://gw.example/hss"),
        (
            "HSS_ENTERPRISE_PROJECT_ID",
            "all_granted_eps",
            "enterprise_project_id",
            "all_granted_eps",
        ),
        ("HSS_ENTERPRISE_PROJECT_ID", "e" * 256, "enterprise_project_id", "e" * 256),
        ("HSS_RATE_LIMIT", "5/60s", "rate_limit", RateLimit(5, 60.0)),
        ("HSS_RATE_LIMIT", "5/1m", "rate_limit", RateLimit(5, 60.0)),
        ("HSS_RATE_LIMIT", "10/600ms", "rate_limit", RateLimit(10, 0.6)),
        ("HSS_RATE_LIMIT", "5/60", "rate_limit", RateLimit(5, 60.0)),
        ("HSS_RATE_LIMIT", " 1 / 2.5 s ", "rate_limit", RateLimit(1, 2.5)),
        ("HSS_TASKS_RATE_LIMIT", "5/60s", "tasks_rate_limit", RateLimit(5, 60.0)),
        ("HSS_TASKS_RATE_LIMIT", "3/1m", "tasks_rate_limit", RateLimit(3, 60.0)),
        ("HSS_TASKS_RATE_LIMIT", "10/600ms", "tasks_rate_limit", RateLimit(10, 0.6)),
        ("HSS_TASKS_RATE_LIMIT", " 1 / 2.5 s ", "tasks_rate_limit", RateLimit(1, 2.5)),
        ("HSS_FRESH_SECONDS", "0", "fresh_seconds", 0.0),
        ("HSS_FRESH_SECONDS", "2.5", "fresh_seconds", 2.5),
        ("POLL_INTERVAL_SECONDS", "1", "poll_interval_seconds", 1.0),
        ("POLL_INTERVAL_SECONDS", " 2.5 ", "poll_interval_seconds", 2.5),
        ("POLL_INTERVAL_SECONDS", "300", "poll_interval_seconds", 300.0),
        ("TASKS_POLL_SECONDS", "1", "tasks_poll_seconds", 1.0),
        ("TASKS_POLL_SECONDS", " 60 ", "tasks_poll_seconds", 60.0),
        ("STUCK_AFTER_SECONDS", "0.5", "stuck_after_seconds", 0.5),
        ("STUCK_AFTER_SECONDS", "3600", "stuck_after_seconds", 3600.0),
        ("MISSED_RUN_AFTER_SECONDS", "172800", "missed_run_after_seconds", 172_800.0),
        ("HSS_WATCH_ADMINS", "U024BE7LH", "watch_admins", frozenset({"U024BE7LH"})),
        (
            "HSS_WATCH_ADMINS",
            " U024BE7LH, W0G7Z1V2N ,S0614TZR7,U024BE7LH",
            "watch_admins",
            frozenset({"U024BE7LH", "W0G7Z1V2N", "S0614TZR7"}),
        ),
        ("REDIS_URL", "redis://127.0.0.1:6379/1", "redis_url", "redis://127.0.0.1:6379/1"),
        ("REDIS_URL", "rediss://cache.example:6380", "redis_url", "rediss://cache.example:6380"),
        ("REDIS_URL", "unix:///tmp/redis.sock", "redis_url", "unix:///tmp/redis.sock"),
        ("PORT", "0", "port", 0),
        ("PORT", "8080", "port", 8080),
        ("PORT", "65535", "port", 65535),
        ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("LOG_LEVEL", " Warning ", "log_level", "WARNING"),
        ("HSS_DATA_DIR", "/var/lib/hss", "data_dir", Path("/var/lib/hss")),
        ("HSS_SLASH_COMMAND", "/hss-dev", "command_name", "/hss-dev"),
    ],
)
def test_each_variable_is_read(name: str, value: str, attr: str, expected: Any) -> None:
    assert getattr(Settings.from_env({name: value}), attr) == expected


@pytest.mark.parametrize(
    "name",
    [
        "PORT",
        "HSS_RATE_LIMIT",
        "HSS_TASKS_RATE_LIMIT",
        "HSS_FRESH_SECONDS",
        "REDIS_URL",
        "HSS_REGION",
        "CLOUD_SDK_SK",
        "POLL_INTERVAL_SECONDS",
        "HSS_WATCH_ADMINS",
    ],
)
@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_values_count_as_unset(name: str, blank: str) -> None:
    # Env files and CI often define a variable as empty rather than leaving it out.
    assert Settings.from_env({name: blank}) == Settings.from_env({})


@pytest.mark.parametrize(
    ("text", "calls", "window", "shown"),
    [
        ("5/60s", 5, 60.0, "5/60s"),
        ("5/1m", 5, 60.0, "5/60s"),
        ("10/600ms", 10, 0.6, "10/0.6s"),
        ("5/60", 5, 60.0, "5/60s"),
        ("1/2s", 1, 2.0, "1/2s"),
        ("3/0.5", 3, 0.5, "3/0.5s"),
    ],
)
def test_rate_limit_forms(text: str, calls: int, window: float, shown: str) -> None:
    limit = RateLimit.parse(text)
    assert limit.calls == calls
    assert limit.window == pytest.approx(window)
    assert str(limit) == shown
    assert RateLimit.parse(str(limit)) == limit


# --- refusals --------------------------------------------------------------------------------

MALFORMED: list[tuple[str, str]] = [
    ("SLACK_APP_TOKEN", "xoxb-not-an-app-token"),
    ("SLACK_API_URL", "slack.com/api"),
    ("SLACK_API_URL", "ftp://slack.com/api/"),
    ("SLACK_API_URL", "http://slack .com/api/"),
    ("HSS_PROJECT_ID", "p" * 257),
    ("HSS_REGION", "mars-north-1"),
    ("HSS_ENDPOINT", "hss.ap-southeast-1.myhuaweicloud.com"),
    ("HSS_ENDPOINT", "ftp://hss.example.com"),
    ("HSS_ENDPOINT", "http://"),
    ("HSS_ENDPOINT", "http://127.0.0.1:abc"),
    ("HSS_ENDPOINT", "http://127.0.0.1:99999"),
    ("HSS_ENDPOINT", "http://hss.example.com/ x"),
    ("HSS_ENDPOINT", "https://hss.example.com?x=1"),
    ("HSS_ENTERPRISE_PROJECT_ID", "e" * 257),
    ("HSS_RATE_LIMIT", "abc"),
    ("HSS_RATE_LIMIT", "5"),
    ("HSS_RATE_LIMIT", "0/60s"),
    ("HSS_RATE_LIMIT", "5/0s"),
    ("HSS_RATE_LIMIT", "5/60h"),
    ("HSS_RATE_LIMIT", "-1/60s"),
    ("HSS_RATE_LIMIT", "5/-60s"),
    ("HSS_RATE_LIMIT", "5 per minute"),
    ("HSS_TASKS_RATE_LIMIT", "abc"),
    ("HSS_TASKS_RATE_LIMIT", "0/60s"),
    ("HSS_TASKS_RATE_LIMIT", "5/0s"),
    ("HSS_TASKS_RATE_LIMIT", "5/60h"),
    ("HSS_FRESH_SECONDS", "abc"),
    ("HSS_FRESH_SECONDS", "-1"),
    ("HSS_FRESH_SECONDS", "nan"),
    ("HSS_FRESH_SECONDS", "inf"),
    ("HSS_FRESH_SECONDS", "1e999"),
    ("REDIS_URL", "localhost:6379"),
    ("REDIS_URL", "http://localhost:6379"),
    ("PORT", "x"),
    ("LOG_LEVEL", "loud"),
    ("PORT", "-1"),
    ("PORT", "65536"),
    ("PORT", "3000.5"),
    ("HSS_SLASH_COMMAND", "hss-sync"),
    ("POLL_INTERVAL_SECONDS", "0"),
    ("POLL_INTERVAL_SECONDS", "0.5"),
    ("POLL_INTERVAL_SECONDS", "-60"),
    ("POLL_INTERVAL_SECONDS", "1m"),
    ("POLL_INTERVAL_SECONDS", "nan"),
    ("POLL_INTERVAL_SECONDS", "inf"),
    ("TASKS_POLL_SECONDS", "0.5"),
    ("TASKS_POLL_SECONDS", "0"),
    ("TASKS_POLL_SECONDS", "5m"),
    ("TASKS_POLL_SECONDS", "inf"),
    ("STUCK_AFTER_SECONDS", "0"),
    ("STUCK_AFTER_SECONDS", "-7200"),
    ("STUCK_AFTER_SECONDS", "2h"),
    ("STUCK_AFTER_SECONDS", "nan"),
    ("MISSED_RUN_AFTER_SECONDS", "0"),
    ("MISSED_RUN_AFTER_SECONDS", "26h"),
    ("MISSED_RUN_AFTER_SECONDS", "inf"),
    ("HSS_WATCH_ADMINS", "alice"),
    ("HSS_WATCH_ADMINS", "@alice"),
    ("HSS_WATCH_ADMINS", "<@U024BE7LH>"),
    ("HSS_WATCH_ADMINS", "u024be7lh"),  # Slack ids are upper-case: this would match nobody
    ("HSS_WATCH_ADMINS", "C0123ABCD"),  # a channel is not a person
    ("HSS_WATCH_ADMINS", "B0123ABCD"),
    ("HSS_WATCH_ADMINS", "U024BE7LH,,S0614TZR7"),
    ("HSS_WATCH_ADMINS", "U024BE7LH,"),
    ("HSS_WATCH_ADMINS", "U024BE7LH S0614TZR7"),
]


@pytest.mark.parametrize(("name", "value"), MALFORMED)
def test_malformed_value_names_its_variable(name: str, value: str) -> None:
    error = config_error({**FULL_ENV, name: value})
    assert error.variable == name
    assert error.problem
    assert str(error).startswith(f"{name}: ")
    assert "\n" not in str(error)
    for secret in SECRETS:
        assert secret not in str(error)


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [("abc", "5/60s"), ("5", "5/1m"), ("5/60h", "600ms")],
)
def test_rate_limit_error_says_what_is_accepted(raw: str, accepted: str) -> None:
    for name in ("HSS_RATE_LIMIT", "HSS_TASKS_RATE_LIMIT"):
        error = config_error({name: raw})
        assert error.variable == name
        assert repr(raw) in error.problem
        assert accepted in error.problem


def test_the_two_budgets_are_set_apart() -> None:
    s = Settings.from_env({"HSS_RATE_LIMIT": "4/60s", "HSS_TASKS_RATE_LIMIT": "2/30s"})
    assert (s.rate_limit, s.tasks_rate_limit) == (RateLimit(4, 60.0), RateLimit(2, 30.0))


@pytest.mark.parametrize(
    ("name", "raw", "accepted"),
    [
        ("POLL_INTERVAL_SECONDS", "0.5", "1 or more"),
        ("TASKS_POLL_SECONDS", "0.5", "seconds, 1 or more"),
        ("STUCK_AFTER_SECONDS", "2h", "seconds, more than 0"),
        ("MISSED_RUN_AFTER_SECONDS", "-1", "seconds, more than 0"),
        ("HSS_WATCH_ADMINS", "U1X,alice", "user ids (U..., W...) or user-group ids (S...)"),
    ],
)
def test_watch_settings_say_what_is_accepted(name: str, raw: str, accepted: str) -> None:
    error = config_error({name: raw})
    assert error.variable == name
    assert accepted in error.problem


def test_secret_errors_do_not_echo_the_value() -> None:
    error = config_error({"SLACK_APP_TOKEN": "xoxb-leaked-if-echoed"})
    assert "xoxb-leaked-if-echoed" not in str(error)
    assert "xapp-" in error.problem


# --- the HSS endpoint ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "endpoint"),
    [
        ("ap-southeast-1", "https://hss.ap-southeast-1.myhuaweicloud.com"),
        ("ap-southeast-3", "https://hss.ap-southeast-3.myhuaweicloud.com"),
        ("cn-north-4", "https://hss.cn-north-4.myhuaweicloud.com"),
        ("af-south-1", "https://hss.af-south-1.myhuaweicloud.com"),
        ("eu-west-101", "https://hss.eu-west-101.myhuaweicloud.eu"),
    ],
)
def test_region_maps_to_endpoint(region: str, endpoint: str) -> None:
    assert Settings.from_env({"HSS_REGION": region}).hss_endpoint == endpoint


@pytest.mark.parametrize("region", [None, "ap-southeast-1", "eu-west-101", "not-a-region-9"])
def test_endpoint_overrides_region(region: str | None) -> None:
    env = {"HSS_ENDPOINT": "http://127.0.0.1:8931/"}
    if region is not None:
        env["HSS_REGION"] = region
    assert Settings.from_env(env).hss_endpoint == "http://127.0.0.1:8931"


def test_unknown_region_without_endpoint_is_refused() -> None:
    error = config_error({"HSS_REGION": "ap-southeast-99"})
    assert error.variable == "HSS_REGION"
    assert "ap-southeast-99" in error.problem
    assert "HSS_ENDPOINT" in error.problem


def test_no_region_and_no_endpoint() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ConfigError) as info:
        _ = settings.hss_endpoint
    assert info.value.variable == "HSS_REGION"


# --- what each mode requires -----------------------------------------------------------------

HSS_ENV = {k: FULL_ENV[k] for k in ("CLOUD_SDK_AK", "CLOUD_SDK_SK", "HSS_PROJECT_ID", "HSS_REGION")}


def test_hss_commands_accept_a_complete_configuration() -> None:
    settings = Settings.for_command(HSS_ENV, hss=True, slack=False)
    assert settings.hss_endpoint == "https://hss.ap-southeast-1.myhuaweicloud.com"
    by_endpoint = {**HSS_ENV, "HSS_REGION": "", "HSS_ENDPOINT": "http://h:1"}
    assert Settings.for_command(by_endpoint, hss=True, slack=False).hss_endpoint == "http://h:1"


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("CLOUD_SDK_AK", "CLOUD_SDK_AK"),
        ("CLOUD_SDK_SK", "CLOUD_SDK_SK"),
        ("HSS_PROJECT_ID", "HSS_PROJECT_ID"),
        ("HSS_REGION", "HSS_REGION"),
    ],
)
def test_hss_commands_name_what_is_missing(missing: str, variable: str) -> None:
    env = {k: v for k, v in HSS_ENV.items() if k != missing}
    with pytest.raises(ConfigError) as info:
        Settings.for_command(env, hss=True, slack=False)
    assert type(info.value) is ConfigError  # that one variable, nothing else
    assert info.value.variable == variable
    assert SK not in str(info.value)


@pytest.mark.parametrize(
    "env",
    [
        {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING},
        {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN},
        {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING,
            "SLACK_APP_TOKEN": APP_TOKEN,
        },
    ],
)
def test_slack_accepts_http_or_socket_mode(env: dict[str, str]) -> None:
    assert Settings.for_command(env, hss=False, slack=True).slack_bot_token == Secret(BOT_TOKEN)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SLACK_SIGNING_SECRET": SIGNING}, "SLACK_BOT_TOKEN"),
        ({"SLACK_APP_TOKEN": APP_TOKEN}, "SLACK_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": BOT_TOKEN}, "SLACK_SIGNING_SECRET"),
    ],
)
def test_slack_names_what_is_missing(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.for_command(env, hss=False, slack=True)
    assert type(info.value) is ConfigError
    assert info.value.variable == variable
    assert BOT_TOKEN not in str(info.value)


def test_slack_with_nothing_set_names_both_missing_settings() -> None:
    with pytest.raises(ConfigErrors) as info:
        Settings.for_command({}, hss=False, slack=True)
    assert [p.variable for p in info.value.problems] == ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]


# --- secrets -------------------------------------------------------------------------------


def test_settings_never_show_a_secret() -> None:
    settings = Settings.from_env(FULL_ENV)
    shown = repr(settings) + str(settings) + f"{settings}" + f"{settings!r}"
    for secret in SECRETS:
        assert secret not in shown
    assert "********" in shown
    assert settings.sk is not None and settings.sk.reveal() == SK
    assert settings.redis_url == FULL_ENV["REDIS_URL"]  # still usable, just not shown


def test_secret_shows_itself_only_when_revealed() -> None:
    secret = Secret(SK)
    assert SK not in repr(secret) + str(secret) + f"{secret}" + repr([secret]) + str({"k": secret})
    assert secret.reveal() == SK
    assert secret == Secret(SK) and secret != Secret(SK + "x")
    assert SK not in secret.fingerprint()


# --- the budget scope ----------------------------------------------------------------------


def test_budget_scope_is_stable_per_ak_and_does_not_reveal_it() -> None:
    scope = Settings.from_env({"CLOUD_SDK_AK": AK, "CLOUD_SDK_SK": SK}).budget_scope
    # A fixed digest, not hash(): every process and replica must derive the same scope.
    assert scope == hashlib.sha256(AK.encode()).hexdigest()[:16]
    assert AK not in scope and SK not in scope
    # Same AK, whatever else differs: one IAM user, one budget at HSS's gateway.
    other_sk = Settings.from_env({"CLOUD_SDK_AK": f" {AK} ", "CLOUD_SDK_SK": "other"})
    assert other_sk.budget_scope == scope
    assert Settings.from_env({"CLOUD_SDK_AK": AK + "2"}).budget_scope != scope
    assert Settings.from_env({}).budget_scope == "anonymous"


def test_auth_scope_belongs_to_the_ak_sk_pair() -> None:
    settings = Settings.from_env({"CLOUD_SDK_AK": AK, "CLOUD_SDK_SK": SK})
    scope = settings.auth_scope
    assert scope == Settings.from_env({"CLOUD_SDK_AK": AK, "CLOUD_SDK_SK": f"{SK}\n"}).auth_scope
    assert AK not in scope and SK not in scope
    # Fixing either half of a rejected pair lifts its lock-out; the budget stays per AK.
    assert Settings.from_env({"CLOUD_SDK_AK": AK, "CLOUD_SDK_SK": "fixed"}).auth_scope != scope
    assert Settings.from_env({"CLOUD_SDK_AK": "AK2", "CLOUD_SDK_SK": SK}).auth_scope != scope
    assert scope != settings.budget_scope


# --- every problem at once -----------------------------------------------------------------


def test_every_malformed_variable_is_reported_at_once() -> None:
    env = {**FULL_ENV, "PORT": "x", "HSS_RATE_LIMIT": "abc", "REDIS_URL": "localhost:6379"}

    error = config_error(env)

    assert isinstance(error, ConfigErrors)
    assert [p.variable for p in error.problems] == ["HSS_RATE_LIMIT", "REDIS_URL", "PORT"]
    for secret in SECRETS:
        assert secret not in str(error)


def test_one_problem_is_a_plain_config_error() -> None:
    error = config_error({**FULL_ENV, "PORT": "x"})

    assert type(error) is ConfigError
    assert error.variable == "PORT"


def test_for_command_adds_what_the_command_needs_to_what_is_malformed() -> None:
    env = {"PORT": "x", "SLACK_APP_TOKEN": "xoxb-not-an-app-token"}

    with pytest.raises(ConfigErrors) as info:
        Settings.for_command(env, hss=True, slack=True)

    # The malformed app token is not also reported as a missing signing secret.
    assert [p.variable for p in info.value.problems] == [
        "SLACK_APP_TOKEN",
        "PORT",
        "CLOUD_SDK_AK",
        "CLOUD_SDK_SK",
        "HSS_PROJECT_ID",
        "HSS_REGION",
        "SLACK_BOT_TOKEN",
    ]


def test_for_command_reports_a_malformed_value_once_not_also_as_missing() -> None:
    env = {**FULL_ENV, "HSS_ENDPOINT": "127.0.0.1:1", "HSS_PROJECT_ID": "p" * 300}
    del env["HSS_REGION"]

    with pytest.raises(ConfigErrors) as info:
        Settings.for_command(env, hss=True, slack=False)

    assert [p.variable for p in info.value.problems] == ["HSS_ENDPOINT", "HSS_PROJECT_ID"]


def test_for_command_asks_only_for_what_the_command_needs() -> None:
    hss_only = {k: v for k, v in FULL_ENV.items() if not k.startswith("SLACK_")}

    assert Settings.for_command(hss_only, hss=True, slack=False).ak == Secret(AK)
    with pytest.raises(ConfigError) as info:
        Settings.for_command(hss_only, hss=True, slack=True)
    assert isinstance(info.value, ConfigErrors)
    assert {p.variable for p in info.value.problems} == {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"}
