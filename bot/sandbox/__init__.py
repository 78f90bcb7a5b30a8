"""Stand-ins for the outside world, shipped because ``demo`` and ``simulate`` are features:
the HSS simulator and its server, the Slack Web API stand-in and signed Slack requests, a
whole local deployment in one process, and the demo with its terminal view.

May import anything. Nothing outside this package imports it, except ``cli``, lazily.
"""
