"""Channel alerts: flips found in the mirror's changes, the alert messages, the pipeline that
turns changes into per-channel incidents, the outbox that delivers them to Slack, and the
scheduler that keeps watched tasks fresh.

May import: the core, ``storage``, ``hss``, ``lookup``, ``ops.logs``/``ops.metrics`` and
``slack``'s pure views (text, blocks, render, action values); never ``slack``'s handlers.
"""
