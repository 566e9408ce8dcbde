"""corral.Pipeline: several stages in one worker (docs/pipelines.md)."""

import numpy as np
import pytest

import corral
from conftest import FIXTURES, fixture_ref
from corral.pipeline import Stage

STAGES = f"{FIXTURES}/stages.py"


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)) * [1, 10, 100, 1, 1] + [0, 5, -3, 2, 1]
    y = x @ [1.0, 0.1, 0.01, -2.0, 0.5] + 3.0
    return x, y


@pytest.fixture
def stages_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("stages", STAGES)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_three_stage_fit_and_forward_match_the_same_stages_in_process(stages_module):
    s = stages_module
    x, y = _data()
    pipe = corral.Pipeline([s.Scaler, (s.Project, {"k": 3}), f"{STAGES}:Ridge"])
    with corral.Worker(pipe) as w:
        assert w.call("stage_names") == ["scaler", "project", "ridge"]
        states = w.call("fit", x, y)
        assert set(states) == {"scaler", "project", "ridge"}
        assert states["project"]["k"] == 3 and states["project"]["basis"].shape == (5, 3)
        out = w.call("forward", x)
    local = corral.Pipeline([s.Scaler(), s.Project(k=3), s.Ridge()])
    local.fit(x, y)
    np.testing.assert_array_equal(out, local.forward(x))
    np.testing.assert_array_equal(states["scaler"]["mean"], x.mean(axis=0))


def test_states_come_out_and_go_into_another_worker(stages_module):
    s = stages_module
    x, y = _data()
    spec = [s.Scaler, (s.Project, {"k": 2}), s.Ridge, s.Double]
    with corral.Worker(corral.Pipeline(spec)) as a:
        a.call("fit", x, y)
        states = a.get_state()
        expected = a.call("forward", x)
        assert a.call("get_state", "double") == {}
    with corral.Worker(corral.Pipeline(spec)) as b:
        b.set_state(states)
        np.testing.assert_array_equal(b.call("forward", x), expected)


def test_pipeline_from_references_with_config():
    x, y = _data()
    config = {"stages": [f"{STAGES}:Scaler", [f"{STAGES}:Project", {"k": 2}],
                         f"{STAGES}:Ridge"]}
    with corral.Worker("corral.pipeline:Pipeline", config=config) as w:
        w.call("fit", x, y)
        assert w.call("forward", x[:7]).shape == (7,)


def test_a_failing_stage_is_named(stages_module):
    s = stages_module
    with corral.Worker(corral.Pipeline([s.Double, s.Broken, s.Double])) as w:
        with pytest.raises(corral.RemoteError, match=r"stage 'broken' \(2 of 3, Broken\) "
                                                     r"failed in forward") as info:
            w.call("forward", np.ones(3))
        assert isinstance(info.value.__cause__, ValueError)
        assert w.call("stage_names") == ["double", "broken", "double_2"]


def test_bad_stage_specs_are_refused(stages_module):
    s = stages_module
    with pytest.raises(TypeError, match="tuple stage"):
        corral.Pipeline([(s.Scaler,)])
    with pytest.raises(corral.SetupError, match="give its class instead"):
        with corral.Worker(corral.Pipeline([Stage(s.Scaler(), {"a": 1})])):
            pass
    with pytest.raises(corral.SetupError, match="at least one stage"):
        with corral.Worker(corral.Pipeline([])):
            pass


def test_fit_batches_reports_progress_and_loads_once(stages_module):
    s = stages_module
    x, _ = _data(n=1000)
    events = []
    with corral.Worker(corral.Pipeline([s.RunningMean, s.Double])) as w:
        result = w.options(on_event=events.append).call("fit_batches", x, None,
                                                        batch_size=100, epochs=2)
        pid = w.pid
        assert w.call("get_state", "running_mean")["n"] == 2000
        assert w.pid == pid
    assert result["batches"] == 20
    steps = [(e.step, e.total) for e in events if type(e) is corral.Progress]
    assert steps == [(float(i), 20.0) for i in range(1, 21)]
    np.testing.assert_allclose(result["states"]["running_mean"]["total"], 2 * x.sum(axis=0))


def test_fit_batches_from_a_streamed_argument(stages_module):
    s = stages_module
    x, _ = _data(n=500)
    with corral.Worker(corral.Pipeline([s.RunningMean])) as w:
        batches = (x[i:i + 50] for i in range(0, 500, 50))
        result = w.call("fit_batches", batches)
    assert result["batches"] == 10
    np.testing.assert_allclose(result["states"]["running_mean"]["total"], x.sum(axis=0))


def test_torch_stage_state_dict_gradients_and_training():
    torch = pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.spec_from_file_location("stages", STAGES)
    s = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(s)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4))
    y = (x @ [0.5, -1.0, 2.0, 0.1])[:, None]
    pipe = corral.Pipeline([s.Scaler, f"{STAGES}:TorchModel"], lr=0.1)
    with corral.Worker(pipe) as w:
        w.call("fit", x, y)  # fits the scaler; the torch stage has no fit()
        state = w.call("get_state", "torch_model")
        assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"}
        assert all(isinstance(v, np.ndarray) for v in state.values())
        g = w.call("get_gradients", x, y)
        assert g["loss"] > 0 and g["gradients"]["torch_model"]["0.weight"].shape == (8, 4)
        before = w.call("forward", x)
        w.call("apply_gradients", g["gradients"])
        after_loss = w.call("get_gradients", x, y)["loss"]
        assert after_loss < g["loss"]
        result = w.call("fit_batches", x, y, batch_size=16, epochs=3)
        assert len(result["losses"]) == 12
        assert w.call("forward", x).shape == before.shape == (64, 1)
    # The same model in-process, with the state that came out: the same outputs.
    model = s.make_torch_model()
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    scaled = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-12)
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.as_tensor(scaled)).numpy(), before, atol=1e-12)


def test_a_bidirectional_stream_through_a_pipeline(stages_module):
    s = stages_module
    with corral.Worker(fixture_ref("streams:Streams")) as w:
        assert list(w.stream("doubled", iter([1, 2]))) == [2, 4]
    pipe = corral.Pipeline([s.Double, s.Double])
    assert pipe.forward(np.ones(2)).tolist() == [4.0, 4.0]  # in-process too
