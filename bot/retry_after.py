"""``Retry-After`` (RFC 9110, section 10.2.3): how long a server asks us to wait.

The header is either delta-seconds (``120``) or an HTTP-date (``Wed, 21 Oct 2015 07:28:00
GMT``), read against the caller's clock. HSS's gateway and Slack's Web API both send it with
a 429; :mod:`bot.hss.wire` and :mod:`bot.alerting.outbox` read it here. Pure.
"""

from __future__ import annotations

import math
import re
from datetime import UTC
from email.utils import parsedate_to_datetime

#: RFC 9110's delta-seconds is ``1*DIGIT``; a decimal fraction is read too (lenient, cheap).
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from ``now`` (epoch seconds), 0 or more; None when ``value`` is absent
    or neither form (a negative number, say). A date already past means no wait. Whether a
    long wait is worth waiting is the caller's business."""
    text = (value or "").strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": an HTTP-date is always in GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
