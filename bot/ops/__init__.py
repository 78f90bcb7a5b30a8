"""Running the bot: logs and metrics, the process (HTTP server or Socket Mode, background
workers, shutdown), readiness and the scrape-time gauges.

``logs`` and ``metrics`` are leaves that every layer may import (they import only the core).
The rest is the top of the process and may import anything but ``sandbox``.
"""
