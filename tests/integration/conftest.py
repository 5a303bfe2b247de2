from tests.integration.conftest_http import *  # noqa: F403 - the HTTP server fixtures
