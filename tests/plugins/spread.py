"""Under pytest-xdist, the longest tests spread over the collection, so that each worker's
share holds some of them.

xdist's worksteal scheduler hands each worker a contiguous run of the collection, and idle
workers later steal the end of the longest queue. ``test_replicas``' tests (10-17 s each: real
``hss-sync-bot run`` processes) sit side by side, so one worker got all of them and the others
finished long before it. Spread out, each worker's run holds two of them. Only the order
changes: every test still runs once, and every worker collects the same order. Run without
xdist, the collection keeps its order.
"""

from __future__ import annotations

import pytest

#: Modules whose tests are long and share no module-scoped fixture (spreading a module's tests
#: apart sets such a fixture up again for each piece).
SPREAD = ("tests/test_replicas.py::",)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not hasattr(config, "workerinput"):
        return
    long = [item for item in items if item.nodeid.startswith(SPREAD)]
    rest = [item for item in items if not item.nodeid.startswith(SPREAD)]
    if not long:
        return
    # The k-th long test goes (k + 1/2) * step into the others: evenly apart, none at an end.
    step = len(rest) / len(long)
    keyed = [((float(index), 1), item) for index, item in enumerate(rest)]
    keyed += [(((k + 0.5) * step, 0), item) for k, item in enumerate(long)]
    items[:] = [item for _, item in sorted(keyed, key=lambda pair: pair[0])]
