"""hss-sync-bot: a Slack bot for Huawei Cloud HSS image-sync tasks, inside a 5-calls-a-minute
API budget.

The package, from the bottom up (a module imports only from its own level or below; a test,
``tests/test_layout.py``, holds every module to it):

- core, on top of the package: ``errors``, ``models``, ``runs``, ``config``, ``mirror`` and
  ``retry_after`` (pure);
- ``ops.logs`` and ``ops.metrics``: log lines and counters, which any layer may emit;
- ``storage``: Redis (keys, URL, the embedded server, outages, the mirror and watch stores);
- ``hss``: the HSS API (signing, the wire format, the client and its call budget);
- ``lookup``, ``runs_service``, ``kept_questions`` and ``runtime``: answering from the
  mirror and the runs' snapshot (and trying again in the background after a lookup gave up),
  and assembling the parts above;
- ``slack``'s views (text, blocks, render, home, the command grammar), pure;
- ``alerting``: flips, alert messages, the pipeline, the outbox and the scheduler;
- ``slack``'s handlers (the Bolt app and its buttons);
- ``ops``' process (server, workers, health, scrape-time gauges) and ``cli`` on top.

``sandbox`` (simulator, Slack stand-in, demo) stands in for HSS and Slack: nothing outside it
imports it, except ``cli``, lazily, for ``simulate`` and ``demo``.
"""
