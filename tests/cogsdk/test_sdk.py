"""Cog predictors run unchanged in a corral worker whose environment has the real cog SDK:
Input(...) read as Cog reads it, Cog's types in and out, run()/predict(), current_scope(),
cancellation. (The HTTP side is in test_cog_server.py.)"""

import os
import pathlib

import pytest

import corral
from conftest import wait_until

from .conftest import ref  # noqa: F401


def call(w, method="predict", events=None, **kw):
    opts = w.options(convert=True, on_event=events.append if events is not None else None)
    return opts.call(method, **kw)


def test_input_options_become_the_schema_cog_builds(cog_worker):
    w = cog_worker("inputs:Predictor")
    schema = w.describe()["predict"].input
    props = schema["properties"]
    assert list(props) == ["prompt", "steps", "scale", "mode", "tag", "legacy", "seed"]
    assert [p["x-order"] for p in props.values()] == list(range(7))
    # Input(description=...) has no default, nor has Input(default=None) on an int: both required
    assert schema["required"] == ["prompt", "seed"]
    assert props["prompt"] == {"type": "string", "title": "Prompt", "x-order": 0,
                               "description": "What to draw"}
    assert props["steps"] == {"type": "integer", "title": "Steps", "x-order": 1, "default": 4,
                              "minimum": 1, "maximum": 50, "description": "Denoising steps"}
    assert props["mode"]["enum"] == ["fast", "slow"] and props["mode"]["default"] == "fast"
    assert props["tag"]["minLength"] == 2 and props["tag"]["maxLength"] == 5
    assert props["tag"]["pattern"] == "^[a-z]+$"
    assert props["legacy"]["deprecated"] is True


def test_valid_inputs_get_defaults_and_types(cog_worker):
    w = cog_worker("inputs:Predictor")
    # "7" for an int is converted (as Cog's SDK does); a JSON int for a float stays an int,
    # as coglet hands it over
    assert call(w, prompt="cat", seed="7", scale=2) == "cat|4|2|fast|ab|False|7"
    assert call(w, prompt="cat", seed=7, scale=2.5) == "cat|4|2.5|fast|ab|False|7"
    assert call(w, prompt="cat", seed=1, steps=50, mode="slow", tag="abcde") == \
        "cat|50|7.5|slow|abcde|False|1"


def test_every_constraint_of_input_is_enforced(cog_worker):
    w = cog_worker("inputs:Predictor")
    with pytest.raises(corral.ArgumentError) as err:
        call(w, steps=0, scale=21, mode="medium", tag="A", legacy="maybe")
    where = {p["loc"][0] for p in err.value.problems}
    assert where == {"prompt", "seed", "steps", "scale", "mode", "tag", "legacy"}
    with pytest.raises(corral.ArgumentError) as err:
        call(w, prompt="x", seed=1, tag="abcdef")
    assert [p["loc"] for p in err.value.problems] == [["tag"]]


def test_unknown_inputs_are_dropped_as_cog_drops_them(cog_worker):
    w = cog_worker("inputs:Predictor")
    assert call(w, prompt="a", seed=2, nonsense=1).startswith("a|4|")


def test_base_runner_run_is_predict_and_scope_reaches_corral(cog_worker):
    w = cog_worker("runner:Runner")
    assert set(w.methods) == {"run", "predict"}  # BaseRunner's bridges are not methods
    events = []
    out = w.options(convert=True, on_event=events.append,
                    context={"user": "ana"}).call("predict", name="bo", times=2)
    assert out == "hi bo hi bo for ana"
    metrics = [(e.name, e.value, e.mode) for e in events if type(e).__name__ == "Metric"]
    assert metrics == [("calls", 1, "increment"), ("name_length", 2, "replace"),
                       ("seen", "bo", "append"), ("temp", 5, "replace"),
                       ("temp", None, "replace")]
    assert call(w, name="x") == "hi x for nobody"


def test_plain_class_and_function_predictors(cog_worker):
    assert call(cog_worker("plain_class:Plain"), n=3) == [0, 1, 2]
    fn = cog_worker("plain_class:run")
    assert set(fn.methods) == {"run", "predict"}
    assert call(fn, text="abc", upper="true") == "ABC"
    with pytest.raises(corral.ArgumentError):
        call(fn)


def test_path_and_file_inputs_and_outputs(cog_worker, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"abc")
    blob = tmp_path / "blob.txt"
    blob.write_text("xyz")
    w = cog_worker("files:Predictor")
    out = call(w, image=str(src), blob=str(blob), more=[str(src), str(blob)])
    assert out["text"] == "Path:3|blob:xyz|more:.bin,.txt"
    assert type(out["image"]).__name__ == "PosixPath"  # a plain path: the server sends it
    assert pathlib.Path(out["image"]).read_bytes() == b"cba" and out["extra"] is None
    schema = w.describe()["predict"]
    assert schema.input["properties"]["image"]["format"] == "uri"
    assert schema.input["properties"]["more"]["items"]["format"] == "uri"
    many = cog_worker("files:many")
    outs = call(many, paths=[str(src), str(blob)])
    assert [pathlib.Path(p).read_bytes() for p in outs] == [b"cba", b"zyx"]


def test_secret_is_a_string_in_and_a_secret_in_the_code(cog_worker):
    w = cog_worker("secret:Predictor")
    events = []
    assert call(w, events=events, token="s3cret") == "Secret:6:terc3s:True"
    assert [e.text for e in events if type(e).__name__ == "Log"] == ["token is **********"]
    props = w.describe()["predict"].input["properties"]
    assert props["token"]["x-cog-secret"] is True and props["token"]["format"] == "password"
    assert props["spare"]["nullable"] is True
    # A Secret whose default is None is optional (Cog's schema for the common idiom; the
    # source's Input() and Input(default=None) look alike at runtime: docs/cog.md)
    assert "required" not in w.describe()["predict"].input


def test_streaming_outputs(cog_worker):
    w = cog_worker("streaming:Predictor")
    assert list(w.options(convert=True).stream("predict", n=3)) == ["tok0 ", "tok1 ", "tok2 "]
    assert w.describe()["predict"].output["x-cog-array-display"] == "concatenate"
    assert list(cog_worker("streaming:Counter").stream("predict", n=2)) == [0, 1]
    assert list(cog_worker("streaming:AsyncTokens").stream("predict")) == ["a0", "a1"]


def test_optional_and_union_inputs_as_cog(cog_worker):
    w = cog_worker("optional_union:Predictor")
    assert call(w) == "NoneType:None|NoneType:None|None"
    assert call(w, value="v", either=1) == "str:v|int:1|None"
    assert call(w, either=1.5, count=2) == "NoneType:None|float:1.5|2"
    assert call(w, either="s") == "NoneType:None|str:s|None"
    with pytest.raises(corral.ArgumentError):
        call(w, count=-1)
    with pytest.raises(corral.ArgumentError) as err:  # omit it; an explicit null is refused
        call(w, value=None)
    assert err.value.problems[0]["loc"] == ["value"]
    props = w.describe()["predict"].input
    assert "required" not in props and props["properties"]["value"]["nullable"] is True


def test_cancel_raises_cogs_cancelation_exception_in_the_predictor(cog_worker, tmp_path):
    marker = tmp_path / "marker"
    w = cog_worker("cancel:Predictor")
    fut = w.options(convert=True).submit("predict", marker=str(marker))
    wait_until(lambda: marker.exists() and "started" in marker.read_text(), 30,
                   "the prediction to start")
    fut.cancel()
    with pytest.raises(corral.Cancelled):
        fut.result(30)
    wait_until(lambda: "cancelled" in marker.read_text(), 10, "the predictor's except block")


def test_async_concurrent_predictor_runs_its_slots_at_once(cog_worker, tmp_path):
    w = cog_worker("concurrency:Predictor", slots=4)
    futs = [w.options(convert=True).submit("predict", gate=str(tmp_path), i=i)
            for i in range(4)]
    wait_until(lambda: len([n for n in os.listdir(tmp_path) if n.startswith("in-")]) == 4,
               30, "four predictions running at once")
    (tmp_path / "open").touch()
    assert sorted(f.result(30) for f in futs) == [0, 1, 2, 3]


def test_corral_names_are_enough_to_write_the_cog_way_without_cog(tmp_path):
    notes = tmp_path / "n.txt"
    notes.write_text("(notes)")
    target = os.path.join(os.path.dirname(__file__), "corral_way.py") + ":Predictor"
    with corral.Worker(target) as w:
        schema = w.describe()["predict"].input
        assert schema["required"] == ["name"]
        assert schema["properties"]["mode"]["enum"] == ["plain", "shout"]
        assert schema["properties"]["times"]["maximum"] == 3
        assert call(w, name="x", times=2, mode="shout") == "HELLO XHELLO X"
        assert call(w, name="y", notes=str(notes)) == "hello y (notes)"
        with pytest.raises(corral.ArgumentError):
            call(w, name="x", times=4)
