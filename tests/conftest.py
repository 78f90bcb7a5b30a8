pytest_plugins = ["tests.plugins.redis_server", "tests.plugins.hss_sim"]
