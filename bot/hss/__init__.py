"""The HSS API: request signing, the wire formats, the client and its shared call budgets (one
per API: ListAssociateRegistries and ListImageScanTask).

May import: the core (``errors``, ``models``, ``runs``, ``config``), ``storage`` (the budgets
keep their windows in Redis) and ``ops.logs``/``ops.metrics``.
"""
