"""Write the ``.cog/openapi_schema.json`` that ``cog build`` would, for coglet to serve.

Run with the python of a venv holding cog (``/tmp/coglet-venv/bin/python``)::

    python benchmarks/cog_schema.py DIR predict.py:Predictor [--train]

cog's own inspector (``cog._inspector.create_predictor``) reads the predictor; the
document is assembled as cog's static generator assembles it (pkg/schema/openapi_spec.go:
x-order, titles, choices as enum components, None defaults, nullable, required), without
the Go toolchain. corral's code is not used here: this is the reference side.
"""

from __future__ import annotations

import json
import os
import sys


def title(name: str) -> str:
    return name.replace("_", " ").title()


def input_schema(info, adt) -> tuple[dict, dict]:
    props, required, enums = {}, [], {}
    for name, field in info.inputs.items():
        ft = field.type
        prop: dict = {"x-order": field.order}
        if field.choices:
            kind = ft.primitive.json_type().get("type") or "string"
            enums[name] = {"title": name, "description": "An enumeration.",
                           "enum": list(field.choices), "type": kind}
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = title(name)
            prop.update(ft.json_type())
        nullable = ft.repetition in (adt.Repetition.OPTIONAL, adt.Repetition.OPTIONAL_REPEATED)
        if ft.primitive is adt.PrimitiveType.SECRET and ft.repetition is adt.Repetition.REQUIRED \
                and field.default is None:
            nullable = True
        has_default = field.default is not None or nullable
        if not has_default and (ft.union_variants or ft.repetition in (
                adt.Repetition.REQUIRED, adt.Repetition.REPEATED)):
            required.append(name)
        if field.default is not None:
            prop["default"] = ft.json_encode(field.default) if not isinstance(
                field.default, (list, tuple)) else list(field.default)
        if nullable:
            prop["nullable"] = True
        for key, attr in (("description", "description"), ("minimum", "ge"),
                          ("maximum", "le"), ("minLength", "min_length"),
                          ("maxLength", "max_length"), ("pattern", "regex")):
            if getattr(field, attr) is not None:
                prop[key] = getattr(field, attr)
        if field.deprecated:
            prop["deprecated"] = True
        props[name] = prop
    body = {"title": "Input", "type": "object", "properties": props}
    if required:
        body["required"] = required
    return body, enums


def document(info, adt, train: bool) -> dict:
    inputs, enums = input_schema(info, adt)
    output = info.output.json_type()
    kind = "Training" if train else "Prediction"
    in_name, out_name = ("TrainingInput", "TrainingOutput") if train else ("Input", "Output")
    comps = {in_name: {**inputs, "title": in_name}, out_name: {**output, "title": out_name},
             **enums,
             f"{kind}Request": {"title": f"{kind}Request", "type": "object", "properties": {
                 "id": {"title": "Id", "type": "string"},
                 "input": {"$ref": f"#/components/schemas/{in_name}"}}},
             f"{kind}Response": {"title": f"{kind}Response", "type": "object", "properties": {
                 "input": {"$ref": f"#/components/schemas/{in_name}"},
                 "output": {"$ref": f"#/components/schemas/{out_name}"}}}}
    path = "/trainings" if train else "/predictions"
    op = {"summary": "Train" if train else "Predict", "requestBody": {"content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{kind}Request"}}}},
        "responses": {"200": {"description": "Successful Response"}}}
    if not train and output.get("x-cog-array-type") == "iterator":
        op["x-cog-streaming"] = True
    return {"openapi": "3.0.2", "info": {"title": "Cog", "version": "0.23.1"},
            "paths": {path: {"post": op}}, "components": {"schemas": comps}}


def main() -> None:
    folder, ref = sys.argv[1], sys.argv[2]
    train = "--train" in sys.argv[3:]
    sys.path.insert(0, folder)
    os.chdir(folder)
    from cog import _adt as adt
    from cog._inspector import create_predictor

    file, _, name = ref.partition(":")
    info = create_predictor(os.path.splitext(file)[0], name)
    os.makedirs(".cog", exist_ok=True)
    with open(os.path.join(".cog", "openapi_schema.json"), "w") as f:
        json.dump(document(info, adt, train), f, indent=2)


if __name__ == "__main__":
    main()
