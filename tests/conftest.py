from hypothesis import settings

pytest_plugins = [
    "tests.plugins.redis_server",
    "tests.plugins.hss_sim",
    "tests.plugins.slack_standin",
    "tests.plugins.log_secrets",
    "tests.plugins.spread",
]

# Four xdist workers share two cores: hypothesis' 200 ms per example would fail a test for the
# machine's load, not for its code (no property test is about speed).
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")
