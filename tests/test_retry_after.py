"""``bot.retry_after``: Retry-After as delta-seconds or an HTTP-date (RFC 9110), on an
injected clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.retry_after import parse_retry_after

#: 2023-11-14 22:13:20 UTC.
NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        # delta-seconds
        ("120", 120.0),
        (" 30 ", 30.0),
        ("0", 0.0),
        ("1.5", 1.5),  # not RFC 9110, but unambiguous
        ("99999999999", 99999999999.0),  # huge: the caller decides whether to wait it out
        # HTTP-dates, against NOW
        ("Tue, 14 Nov 2023 22:15:20 GMT", 120.0),  # in the future
        ("Tue, 14 Nov 2023 22:13:20 GMT", 0.0),  # now
        ("Tue, 14 Nov 2023 22:11:20 GMT", 0.0),  # in the past: no wait
        ("Mon, 01 Jan 1990 00:00:00 GMT", 0.0),
        ("Tue, 14 Nov 2023 22:15:20 -0000", 120.0),  # read as GMT, not local time
        ("Tue, 14 Nov 2023 23:15:20 +0100", 120.0),
        ("Tuesday, 14-Nov-23 22:15:20 GMT", 120.0),  # RFC 850, obsolete but allowed
        ("Tue Nov 14 22:15:20 2023", 120.0),  # asctime, obsolete but allowed
        ("Fri, 31 Dec 9999 23:59:59 GMT", 253402300799.0 - NOW),
        # absent or unreadable
        (None, None),
        ("", None),
        ("   ", None),
        ("-5", None),  # negative: not delta-seconds
        ("+5", None),
        ("1e3", None),
        ("inf", None),
        ("nan", None),
        ("9" * 400, None),  # beyond a float
        ("soon", None),
        ("Tue, 32 Nov 2023 22:15:20 GMT", None),
        ("\u0663\u0660", None),  # digits, but not ASCII ones
    ],
)
def test_retry_after_table(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_a_date_is_read_against_the_given_clock() -> None:
    date = "Tue, 14 Nov 2023 22:15:20 GMT"
    assert parse_retry_after(date, now=NOW - 60) == 180.0
    assert parse_retry_after(date, now=NOW + 60) == 60.0
    assert parse_retry_after(date, now=NOW + 600) == 0.0


@given(st.text())
def test_any_text_is_a_wait_or_none(value: str) -> None:
    seconds = parse_retry_after(value, now=NOW)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
