"""Slack fixture: a local stand-in for Slack's Web API (and Socket Mode) per test.

async def test_x(standin: SlackStandIn) -> None:
    env = {"SLACK_API_URL": f"{standin.url}/api/"}   # what the bot calls
    await standin.wait_for(lambda calls: ...)         # what Slack heard
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.sandbox.slack_standin import SlackStandIn


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    slack = SlackStandIn()
    await slack.start()
    yield slack
    await slack.stop()
