pytest_plugins = [
    "tests.plugins.redis_server",
    "tests.plugins.hss_sim",
    "tests.plugins.log_secrets",
]
