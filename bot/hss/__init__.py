"""The HSS API: request signing, the wire format, the client and its shared call budget.

May import: the core (``errors``, ``models``, ``config``), ``storage`` (the budget keeps its
window in Redis) and ``ops.logs``/``ops.metrics``.
"""
