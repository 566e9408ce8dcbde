"""The real Cog SDK (cog 0.23.1 from the registry, with the coglet it needs) in an
environment of its own, built once by corral's plugin machinery (uv, cached), and
helpers to run the predictors of tests/cog/predictors/ in it."""

import os

import pytest

COG_VERSION = "0.23.1"
PREDICTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "predictors")


def ref(name: str) -> str:
    """``"inputs:Predictor"`` -> a reference to tests/cog/predictors/inputs.py:Predictor."""
    file, _, attr = name.partition(":")
    return f"{os.path.join(PREDICTORS, file)}.py:{attr}"


@pytest.fixture(scope="session")
def cog_env():
    """An environment holding cog==0.23.1 and nothing of corral's but its runtime link."""
    pytest.importorskip("uv")
    from corral.plugins.envs import EnvironmentCache

    return EnvironmentCache().ensure([f"cog=={COG_VERSION}"])


@pytest.fixture
def cog_worker(cog_env):
    """``cog_worker("inputs:Predictor", slots=1)``: a started Worker in the cog
    environment, stopped at the end of the test."""
    import corral

    started = []

    def make(name: str, **kw):
        w = corral.Worker(ref(name), python=cog_env.python, env=cog_env.worker_env, **kw)
        started.append(w)
        w.start()
        return w

    yield make
    for w in started:
        w.stop()
