"""/openapi.json in Cog's shape (as ``cog build`` writes it, pkg/schema/openapi_spec.go):
components.schemas.Input (titled, ``x-order``, choices as enum components), Output,
PredictionRequest, PredictionResponse, Status, HTTPValidationError, the Training ones when
the target trains, and the paths of the API (``x-cog-streaming`` on a streaming one).

Input and Output are the method's JSON Schemas as the worker reports them
(``Worker.describe()``, built from the type hints); before the worker is ready, or for
hints that cannot be described, Input is an open object."""

from __future__ import annotations

import json
from typing import Any

from .._version import __version__
from .cogwire import cog_input

#: The document's own components: an enum named after an input never takes one of these.
FIXED = ("Input", "Output", "Status", "HTTPValidationError", "ValidationError",
         "PredictionRequest", "PredictionResponse", "TrainingInput", "TrainingOutput",
         "TrainingRequest", "TrainingResponse")


def _io(method_info: Any, schemas: Any, input_name: str, output_name: str,
        taken: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A method's Input and Output components (as Cog writes them) and its enums, named
    apart from the components ``taken`` (which the enums and nested types join)."""
    input_schema = getattr(schemas, "input", None) or {
        "title": input_name, "type": "object", "additionalProperties": True}
    for part in (input_schema, getattr(schemas, "output", None) or {}):
        for def_name, body in (part.get("$defs") or {}).items():
            taken.setdefault(def_name, body)
    input_schema, enums = cog_input(input_schema, taken)
    taken.update(enums)
    output_schema = dict(getattr(schemas, "output", None) or {})
    streams = method_info is not None and method_info.streams
    if streams:  # a generator: Cog describes the output as an iterator of its items
        display = output_schema.pop("x-cog-array-display", None)
        output_schema = {"type": "array", "items": output_schema,
                         "x-cog-array-type": "iterator"}
        if display:
            output_schema["x-cog-array-display"] = display
    return ({**input_schema, "title": input_name}, {**output_schema, "title": output_name},
            enums)


def openapi(method_info: Any, schemas: Any = None, title: str = "corral",
            train: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """The document; ``train`` is ``(method_info, schemas)`` of the train method, when the
    target has one (then the /trainings routes are in it)."""
    taken: dict[str, Any] = dict.fromkeys(FIXED)
    inputs, outputs, enums = _io(method_info, schemas, "Input", "Output", taken)
    status = {"title": "Status", "description": "An enumeration.",
              "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
              "type": "string"}
    components: dict[str, Any] = {"Input": inputs, "Output": outputs, **enums}
    components.update(_envelopes("Prediction", "Input", "Output"))
    components["Status"] = status
    components["HTTPValidationError"] = {
        "title": "HTTPValidationError", "type": "object", "properties": {"detail": {
            "title": "Detail", "type": "array",
            "items": {"$ref": "#/components/schemas/ValidationError"}}}}
    components["ValidationError"] = {
        "title": "ValidationError", "required": ["loc", "msg", "type"], "type": "object",
        "properties": {
            "loc": {"title": "Location", "type": "array",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"}}}
    paths: dict[str, Any] = {
        "/": {"get": _simple("Root", "root__get")},
        "/health-check": {"get": _simple("Healthcheck", "healthcheck_health_check_get")},
    }
    paths.update(_routes("prediction", "Predict", "Run a single prediction on the model",
                         streams=method_info is not None and method_info.streams))
    if train is not None:
        t_inputs, t_outputs, t_enums = _io(train[0], train[1], "TrainingInput",
                                           "TrainingOutput", taken)
        components.update({"TrainingInput": t_inputs, "TrainingOutput": t_outputs,
                           **t_enums})
        components.update(_envelopes("Training", "TrainingInput", "TrainingOutput"))
        paths.update(_routes("training", "Train", "Run a single training on the model",
                             streams=False))
    paths["/shutdown"] = {"post": _simple("Start Shutdown", "start_shutdown_shutdown_post")}
    # Nested types (a Struct, a dataclass) come as $defs with "#/$defs/X" references:
    # OpenAPI wants them among the components.
    for name in ("Input", "Output", "TrainingInput", "TrainingOutput"):
        for def_name, body in components.get(name, {}).pop("$defs", {}).items():
            components.setdefault(def_name, body)
    components = json.loads(json.dumps(components).replace('"#/$defs/', '"#/components/schemas/'))
    return {"openapi": "3.0.2", "info": {"title": title, "version": __version__},
            "paths": paths, "components": {"schemas": components}}


def _envelopes(kind: str, input_name: str, output_name: str) -> dict[str, Any]:
    request = {
        "title": f"{kind}Request", "type": "object", "properties": {
            "id": {"title": "Id", "type": "string"},
            "input": {"$ref": f"#/components/schemas/{input_name}"},
            "context": {"title": "Context", "type": "object",
                        "additionalProperties": {"type": "string"}},
            "webhook": {"title": "Webhook", "type": "string", "format": "uri"},
            "webhook_events_filter": {"type": "array", "items": {
                "enum": ["start", "output", "logs", "completed"], "type": "string"},
                "default": ["start", "output", "logs", "completed"]},
        }}
    response = {
        "title": f"{kind}Response", "type": "object", "properties": {
            "id": {"title": "Id", "type": "string"},
            "status": {"$ref": "#/components/schemas/Status"},
            "input": {"$ref": f"#/components/schemas/{input_name}"},
            "output": {"$ref": f"#/components/schemas/{output_name}"},
            "logs": {"title": "Logs", "type": "string", "default": ""},
            "error": {"title": "Error", "type": "string"},
            "metrics": {"title": "Metrics", "type": "object"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "started_at": {"title": "Started At", "type": "string", "format": "date-time"},
            "completed_at": {"title": "Completed At", "type": "string", "format": "date-time"},
        }}
    return {f"{kind}Request": request, f"{kind}Response": response}


def _simple(summary: str, op_id: str) -> dict[str, Any]:
    return {"summary": summary, "operationId": op_id, "responses": {"200": {
        "description": "Successful Response",
        "content": {"application/json": {"schema": {}}}}}}


_INVALID = {"description": "Validation Error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}


def _routes(kind: str, summary: str, description: str, streams: bool) -> dict[str, Any]:
    """POST /{kind}s, PUT and cancel, in Cog's words (``kind``: prediction or training)."""
    plural, Kind, param = f"/{kind}s", kind.title(), f"{kind}_id"
    op = {
        "summary": summary, "description": description,
        "operationId": f"{summary.lower()}_{kind}s_post",
        "requestBody": {"content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{Kind}Request"}}}},
        "responses": {
            "200": {"description": "Successful Response", "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{Kind}Response"}}}},
            "202": {"description": "Accepted (Prefer: respond-async)"},
            "422": _INVALID,
            "429": {"description": "The queue is full; see Retry-After"},
        }}
    if streams:
        op["x-cog-streaming"] = True
    parameter = [{"required": True, "schema": {"title": param.replace("_", " ").title(),
                                               "type": "string"},
                  "name": param, "in": "path"}]
    return {
        plural: {"post": op},
        f"{plural}/{{{param}}}": {"put": {**op, "summary": f"{summary} Idempotent",
                                          "operationId": f"{summary.lower()}_idempotent_"
                                                         f"{kind}s__{param}__put",
                                          "parameters": parameter}},
        f"{plural}/{{{param}}}/cancel": {"post": {
            "summary": "Cancel", "operationId": f"cancel_{kind}s__{param}__cancel_post",
            "parameters": parameter,
            "responses": {"200": {"description": "Successful Response", "content": {
                "application/json": {"schema": {}}}},
                "404": {"description": f"No such {kind}"}, "422": _INVALID}}},
    }
