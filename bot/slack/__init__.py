"""Slack: the views (text helpers, Block Kit, rendered answers, the App Home), the
``/hss-sync`` command grammar, and the Bolt app with its handlers.

The views and the grammar are pure and may import only the core (and ``storage``'s watch
records, which they show). The handlers (``app``, ``lookup_handlers``, ``followups``,
``alert_buttons``, ``watch_handlers``, ``run_watch_handlers``, ``socket_mode``)
and what they share (``request_shape``: the checks a request passes before Bolt reads it;
``refusals``: their log lines; ``background``: work after an ack) may import everything
below them: the core, ``storage``, ``hss``, ``lookup``, ``alerting`` and
``ops.logs``/``ops.metrics``.
"""
