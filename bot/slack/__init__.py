"""Slack: the views (text helpers, Block Kit, rendered answers, the App Home), the
``/hss-sync`` command grammar, and the Bolt app with its handlers.

The views and the grammar are pure and may import only the core. The handlers (``app``,
``alert_buttons``, ``watch_handlers``, ``socket_mode``) may import everything below them:
the core, ``storage``, ``hss``, ``lookup``, ``alerting`` and ``ops.logs``/``ops.metrics``.
"""
