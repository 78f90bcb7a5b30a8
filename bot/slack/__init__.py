"""Slack: the views (text helpers, Block Kit, rendered answers and run lists, the App Home),
the ``/hss-sync`` command grammar, and the Bolt app with its handlers.

The views and the grammar are pure and may import only the core (and ``storage``'s watch
records, which they show). The handlers (``app``, ``lookup_handlers``, ``tasks_handlers``,
``followups``, ``alert_buttons``, ``watch_handlers``, ``run_watch_handlers``,
``watch_form_handlers``, ``home_handlers``, ``socket_mode``) and what they share
(``request_shape``: the checks a request passes before Bolt reads it; ``refusals``: their log
lines; ``background``: work after an ack) may import everything below them: the core,
``storage``, ``hss``, ``lookup`` and ``runs_service``, ``alerting`` and
``ops.logs``/``ops.metrics``.
"""
