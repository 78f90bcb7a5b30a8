"""Redis: every key name, the URL, the embedded server, outages, leases, transactions, reading
replies, and the stores built on it (the task mirror, the runs' snapshot, channel watches).

May import: the core (``errors``, ``models``, ``config``, ``mirror``) and
``ops.logs``/``ops.metrics``.
"""
