pytest_plugins = [
    "tests.plugins.redis_server",
    "tests.plugins.hss_sim",
    "tests.plugins.slack_standin",
    "tests.plugins.log_secrets",
    "tests.plugins.spread",
]
