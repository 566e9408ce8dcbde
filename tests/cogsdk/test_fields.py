"""The Cog reading of one parameter (corral/cog/fields.py), as a table: corral.Input's
options and Cog's rules for absence, unions and constraints. Pure functions, no worker."""

from typing import Optional

import pytest

from corral import Input
from corral.worker.inputs import InputError, Inputs


def inputs(annotation, default, cog=True):
    """The Inputs of ``predict(x: annotation = default)`` read the Cog way (as the worker
    reads every method of a target that imports cog)."""
    def predict(x: annotation = default):  # noqa: ANN001 - the annotation is the case
        return x
    if default is REQUIRED:
        def predict(x: annotation):  # noqa: F811
            return x
    return Inputs(predict, cog=cog)


REQUIRED = object()

# annotation, default, schema keys expected (a subset), required?
SCHEMA_CASES = [
    (str, Input(description="d"), {"type": "string", "description": "d", "title": "X",
                                    "x-order": 0}, True),
    (int, Input(default=None), {"type": "integer"}, True),  # None on a non-Optional: no default
    (int, Input(default=3, ge=1, le=5), {"minimum": 1, "maximum": 5, "default": 3}, False),
    (str, Input(default="a", choices=["a", "b"]), {"enum": ["a", "b"]}, False),
    (str, Input(default="ab", min_length=2, max_length=3, regex="^a"),
     {"minLength": 2, "maxLength": 3, "pattern": "^a"}, False),
    (bool, Input(default=False, deprecated=True), {"deprecated": True}, False),
    (Optional[str], REQUIRED, {"type": "string", "nullable": True}, False),
    (Optional[int], Input(default=None, ge=0), {"type": "integer", "minimum": 0,
                                                "nullable": True}, False),
    (list[int], Input(default=None, ge=0), {"type": "array"}, True),
    (float, Input(default=1.5), {"type": "number", "default": 1.5}, False),
]


@pytest.mark.parametrize("annotation, default, expected, required", SCHEMA_CASES)
def test_the_schema_of_one_input(annotation, default, expected, required):
    schema = inputs(annotation, default).schema()
    prop = schema["properties"]["x"]
    assert {k: prop.get(k) for k in expected} == expected, prop
    assert ("x" in schema.get("required", [])) is required


# annotation, default, given (or REQUIRED: omitted), converted value or the error's location
CONVERT_CASES = [
    (int, Input(default=3, ge=1, le=5), REQUIRED, 3),
    (int, Input(default=3, ge=1, le=5), 5, 5),
    (int, Input(default=3, ge=1, le=5), 6, "error"),
    (int, Input(default=3), "4", 4),  # numeric strings convert, as Cog's SDK
    (float, Input(default=1.0), 2, 2),  # a JSON int for a float stays an int, as coglet
    (float, Input(default=1.0), 2.5, 2.5),
    (str, Input(default="a", choices=["a", "b"]), "c", "error"),
    (str, Input(default="ab", regex="^a"), "ba", "error"),
    (str | float | None, Input(default=None), 1, 1),
    (str | float | None, Input(default=None), True, "error"),
    (Optional[str], REQUIRED, REQUIRED, None),
    (Optional[str], REQUIRED, None, "error"),  # omit it; an explicit null is refused
    (list[int], Input(ge=0), [1, -1], "error"),
    (str, Input(description="required"), REQUIRED, "error"),
]


@pytest.mark.parametrize("annotation, default, given, expected", CONVERT_CASES)
def test_converting_one_input(annotation, default, given, expected):
    ins = inputs(annotation, default)
    kwargs = {} if given is REQUIRED else {"x": given}
    if expected == "error":
        with pytest.raises(InputError) as err:
            ins.convert(kwargs)
        assert err.value.problems[0]["loc"][0] == "x"
    else:
        out = ins.convert(kwargs)
        assert out == {"x": expected} and type(out["x"]) is type(expected)


def test_unknown_inputs_are_dropped_the_cog_way_only():
    assert inputs(int, Input(default=1), cog=None).convert({"y": 2}) == {"x": 1}
    with pytest.raises(InputError):
        inputs(int, 1, cog=None).convert({"y": 2})  # a plain target still refuses them
    assert inputs(Optional[str], None, cog=None).convert({"x": None}) == {"x": None}
