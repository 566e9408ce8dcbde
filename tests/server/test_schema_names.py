"""The OpenAPI document names an input's choices after the input, as Cog does, but never
over another component (server/schema.py): a property named like a fixed component, a
nested type, or the same name with other choices in /trainings gets ``<name>2``."""

from types import SimpleNamespace

from corral.server.schema import openapi

INFO = SimpleNamespace(streams=False)


def method(props, defs=None):
    schema = {"type": "object", "properties": props}
    if defs:
        schema["$defs"] = defs
    return SimpleNamespace(input=schema, output={"type": "string"})


def ref(prop):
    return prop["allOf"][0]["$ref"].rsplit("/", 1)[1]


def test_choices_never_take_a_fixed_component_or_a_nested_types_name():
    doc = openapi(INFO, method({
        "Status": {"enum": ["a", "b"], "type": "string"},
        "Output": {"enum": [1, 2], "type": "integer"},
        "Color": {"enum": ["red"], "type": "string"},
        "box": {"$ref": "#/$defs/Color"}},
        defs={"Color": {"type": "object", "properties": {"r": {"type": "integer"}}}}))
    schemas = doc["components"]["schemas"]
    props = schemas["Input"]["properties"]
    assert [ref(props[n]) for n in ("Status", "Output", "Color")] == \
        ["Status2", "Output2", "Color2"]
    assert schemas["Status"]["enum"][0] == "starting"  # the prediction status, unharmed
    assert schemas["Output"] == {"type": "string", "title": "Output"}
    assert schemas["Output2"]["enum"] == [1, 2] and schemas["Output2"]["title"] == "Output2"
    assert schemas["Color"]["properties"] == {"r": {"type": "integer"}}
    assert schemas["Color2"]["enum"] == ["red"]


def test_training_choices_share_a_name_only_when_they_are_the_same():
    predict = method({"mode": {"enum": ["fast", "slow"], "type": "string"},
                      "size": {"enum": ["s", "m"], "type": "string"}})
    train = method({"mode": {"enum": ["full", "lora"], "type": "string"},
                    "size": {"enum": ["s", "m"], "type": "string"}})
    schemas = openapi(INFO, predict, train=(INFO, train))["components"]["schemas"]
    p, t = schemas["Input"]["properties"], schemas["TrainingInput"]["properties"]
    assert (ref(p["mode"]), ref(t["mode"])) == ("mode", "mode2")
    assert schemas["mode"]["enum"] == ["fast", "slow"]
    assert schemas["mode2"]["enum"] == ["full", "lora"]
    assert ref(p["size"]) == ref(t["size"]) == "size"
    assert "size2" not in schemas
