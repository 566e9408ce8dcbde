"""Inputs from outside Python: JSON Schemas of a target's methods (Worker.describe) and
options(convert=True), which checks every input against the type hints in the worker and
lists every problem."""

import asyncio

import pytest

import corral
from conftest import fixture_ref

TYPED = fixture_ref("supervised:Typed")


@pytest.fixture(scope="module")
def w():
    with corral.Worker(TYPED) as w:
        yield w


def test_describe_gives_json_schemas_with_constraints_and_defaults(w):
    schemas = w.describe()
    predict = schemas["predict"].input
    assert predict["required"] == ["prompt"]
    props = predict["properties"]
    assert props["prompt"] == {"type": "string"}
    assert props["steps"] == {"type": "integer", "minimum": 1, "maximum": 50, "default": 10,
                              "description": "how many steps"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "default": []}
    assert props["seed"]["default"] is None
    assert schemas["predict"].output == {"type": "string"}
    assert schemas["count"].output == {"type": "integer"}  # a generator: each item
    assert schemas["path_of"].input["properties"]["where"] == {"type": "string", "format": "uri"}


def test_convert_turns_strings_into_the_hinted_types(w):
    conv = w.options(convert=True)
    assert conv.call("predict", prompt="p", steps="3", scale="2", tags=["a", "b"]) == "p:3:2.0:a,b:None"
    assert conv.call("path_of", where="/tmp/x") == "PosixPath"
    assert asyncio.run(conv.acall("aecho", when="2026-11-26")) == "2026-11-26"
    assert list(conv.stream("count", n="3")) == [0, 1, 2]
    # values that already have their hinted type (taken as they are), and an int where a
    # float is hinted (converted)
    assert conv.call("predict", prompt="p", steps=3, scale=2.5) == "p:3:2.5::None"
    assert conv.call("predict", prompt="p", scale=2) == "p:10:2.0::None"


def test_convert_lists_every_problem(w):
    with pytest.raises(corral.ArgumentError) as info:
        w.options(convert=True).call("predict", steps="many", tags=[1], bogus=True, scale=1)
    problems = {tuple(p["loc"]): p["msg"] for p in info.value.problems}
    assert problems.keys() == {("prompt",), ("steps",), ("tags", 0), ("bogus",)}
    assert problems[("prompt",)] == "required input is missing"
    assert problems[("bogus",)] == "unexpected input"
    assert "int" in problems[("steps",)]
    assert isinstance(info.value, TypeError)


def test_convert_enforces_constraints(w):
    with pytest.raises(corral.ArgumentError) as info:
        w.options(convert=True).call("predict", prompt="p", steps=99)
    assert info.value.problems == [{"loc": ["steps"], "msg": "Expected `int` <= 50"}]


def test_without_convert_arguments_go_as_they_are(w):
    assert w.call("predict", "p", steps=3) == "p:3:1.5::None"


def test_typing_extensions_hints_are_described_and_converted_in_a_worker():
    """A worker imports msgspec without typing_extensions (cold start, _workerstart.py);
    a target's typing_extensions TypedDict, NotRequired and Annotated work as before."""
    with corral.Worker(fixture_ref("extensions_typed:Extended")) as w:
        schema = w.describe()["shape"].input
        assert w.call("hints_module") == "typing"  # (the trimmed import did happen)
        conv = w.options(convert=True)
        assert conv.call("shape", options={"size": "3"}, scale="2") == "6.0:-:float"
        assert conv.call("shape", options={"size": 1, "label": "x"}) == "1.0:x:float"
        with pytest.raises(corral.ArgumentError) as info:
            conv.call("shape", options={"label": "x"}, scale=-1)
    assert info.value.problems == [
        {"loc": ["options"], "msg": "Object missing required field `size`"},
        {"loc": ["scale"], "msg": "Expected `float` > 0.0"}]
    assert schema["properties"]["options"] == {"$ref": "#/$defs/Options"}
    assert schema["$defs"]["Options"]["required"] == ["size"]  # label: NotRequired
    assert set(schema["$defs"]["Options"]["properties"]) == {"size", "label"}
    assert schema["properties"]["scale"] == {"type": "number", "exclusiveMinimum": 0,
                                             "default": 1.0}
