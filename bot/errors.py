"""Errors the bot knows how to explain to people.

    BotError                      every error here carries a sentence for users
    ├── ConfigError               bad or missing setting: exit 2 at start-up
    │   └── ConfigErrors          several at once, each listed
    ├── CommandError              bad slash-command or CLI input: ephemeral reply / exit 2
    │   ├── NotAllowed            the person may not change watches (HSS_WATCH_ADMINS)
    │   └── ChannelRefused        the bot cannot post in the channel a watch is for
    ├── StoreError                Redis failed in a way we cannot route around
    ├── BudgetTimeout             no HSS call slot within the caller's deadline
    ├── TooManyQuestions          the asker already holds their share of the call queue
    └── HssError                  HSS refused or failed; carries code, message, request id
        ├── HssAuthError          401/403: never retried (5 failures lock the AK/SK for 5 min)
        ├── HssThrottledError     429 APIGW.0308
        ├── HssNotFoundError      the task does not exist (HSS.0011, 404)
        ├── HssRequestError       other 4xx: our request was wrong
        ├── HssUnavailableError   5xx, timeouts, network, malformed or inconsistent answers
        └── RunsUnavailable       HSS refuses the run list (ListImageScanTask) to this user

Each error's ``user_message()`` is safe to show in Slack or a terminal: it never contains a
secret and escapes nothing itself (renderers escape).
"""

from __future__ import annotations


class BotError(Exception):
    """Base of every error the bot explains to people."""

    def user_message(self) -> str:
        return str(self)


class ConfigError(BotError):
    """A setting is missing or malformed; ``variable`` names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class ConfigErrors(ConfigError):
    """Several settings are wrong at once; ``problems`` lists each (the first is also this
    error's own ``variable`` and ``problem``)."""

    def __init__(self, problems: list[ConfigError]) -> None:
        super().__init__(problems[0].variable, problems[0].problem)
        self.problems = problems
        self.args = ("; ".join(str(p) for p in problems),)


class CommandError(BotError):
    """User input that we refuse, with what is accepted instead."""


class NotAllowed(CommandError):
    """Only the watch admins may change watches; the sentence names them."""


class ChannelRefused(CommandError):
    """The bot cannot post in the channel a new watch is for; the sentence says how to fix it."""


class StoreError(BotError):
    """Redis is unusable for an operation that has no fallback."""


class BudgetTimeout(BotError):
    """No HSS call slot became free before the caller's deadline."""

    def __init__(self, wait_seconds: float) -> None:
        super().__init__(
            f"The HSS call budget is spent; a call slot frees up in about {wait_seconds:.0f} s."
        )
        self.wait_seconds = wait_seconds


class HssError(BotError):
    """HSS answered with an error or did not answer usefully."""

    meaning = "HSS returned an error."

    def __init__(
        self,
        *,
        error_code: str,
        error_msg: str,
        request_id: str = "",
        status: int = 0,
    ) -> None:
        suffix = f" (request {request_id})" if request_id else ""
        super().__init__(f"{error_code}: {error_msg}{suffix}")
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id
        self.status = status

    def user_message(self) -> str:
        parts = [f"{self.meaning} ({self.error_code}"]
        if self.error_msg and self.error_msg != self.error_code:
            parts.append(f": {self.error_msg}")
        parts.append(")")
        if self.request_id:
            parts.append(f" Request id: {self.request_id}.")
        return "".join(parts)


class HssAuthError(HssError):
    @property
    def meaning(self) -> str:  # type: ignore[override]
        if self.status == 403 or self.error_code == "APIGW.0302":
            return "HSS refused the call: the IAM user lacks permission for this API."
        return (
            "HSS rejected our credentials (wrong AK/SK, signature or token); the bot stops "
            "calling HSS until the configuration is fixed or an operator retries."
        )


class HssThrottledError(HssError):
    meaning = "HSS throttled the call (more than 5 calls a minute for this AK/SK or IP)."

    def __init__(self, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class HssNotFoundError(HssError):
    meaning = "HSS does not know this task (check the task id and enterprise project)."


class HssRequestError(HssError):
    meaning = "HSS refused the request as invalid."


class HssUnavailableError(HssError):
    meaning = "HSS is not answering properly right now; try again in a minute."


class RunsUnavailable(HssError):
    """HSS refused the list of sync runs (403, 404, the API not offered): ``latest`` and
    ``tasks`` cannot work, while lookups by task id (another API) go on as before."""

    meaning = "The list of sync runs is unavailable"

    def user_message(self) -> str:
        why = f"HSS refused ListImageScanTask with {self.error_code}"
        if self.request_id:
            why += f", request {self.request_id}"
        return (
            f"{self.meaning} ({why}): `latest` and `tasks` cannot answer, "
            "but plain task ids keep working."
        )


class TooManyQuestions(BotError):
    """A person already has ``limit`` questions waiting for an HSS call slot: a new one is
    refused before it queues, so one person cannot push everyone else's back."""

    def __init__(self, asker: str, limit: int) -> None:
        super().__init__(
            f"You already have {limit} questions waiting for an HSS call slot, and everyone "
            "shares the few HSS allows a minute; ask again once they are answered."
        )
        self.asker = asker
        self.limit = limit
