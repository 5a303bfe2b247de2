import pytest
from pipelinehelpers import Pipeline

from tests.integration.conftest_http import *  # noqa: F403 - the HTTP server fixtures


@pytest.fixture
def pipeline_factory(tmp_path, kafka_bootstrap, kafka_admin, unique_name):
    """``pipeline_factory(prefix)(server, overrides)``: a test's pipeline on its own topics,
    stopped (and its workers checked) at the end of the test."""
    made: list[Pipeline] = []

    def factory(prefix: str):
        def make(server, overrides=None) -> Pipeline:
            pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name(prefix), server.port, overrides)
            pipe.create_topics(kafka_admin)
            made.append(pipe)
            return pipe

        return make

    yield factory
    for pipe in made:
        pipe.stop()
