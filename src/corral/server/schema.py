"""/openapi.json in Cog's shape: components.schemas.Input, Output, PredictionRequest,
PredictionResponse, Status, and the paths of the prediction API.

Input and Output are the method's JSON Schemas as the worker reports them
(``Worker.describe()``, built from the type hints); before the worker is ready, or for
hints that cannot be described, Input is an open object."""

from __future__ import annotations

import json
from typing import Any

from .._version import __version__


def openapi(method_info: Any, schemas: Any = None, title: str = "corral") -> dict[str, Any]:
    input_schema = getattr(schemas, "input", None) or {
        "title": "Input", "type": "object", "additionalProperties": True}
    output_schema = dict(getattr(schemas, "output", None) or {"title": "Output"})
    if method_info is not None and method_info.streams and schemas is not None \
            and schemas.output:  # a generator: Cog describes the output as an iterator
        output_schema = {"title": "Output", "type": "array", "items": schemas.output,
                         "x-cog-array-type": "iterator"}
    if method_info is not None and method_info.streams and "type" not in output_schema:
        output_schema = {"title": "Output", "type": "array", "items": {},
                         "x-cog-array-type": "iterator"}
    status = {"title": "Status", "enum": ["starting", "processing", "succeeded", "canceled",
                                            "failed"], "type": "string"}
    request = {
        "title": "PredictionRequest", "type": "object", "properties": {
            "id": {"title": "Id", "type": "string"},
            "input": {"$ref": "#/components/schemas/Input"},
            "webhook": {"title": "Webhook", "type": "string", "format": "uri"},
            "webhook_events_filter": {"type": "array", "items": {
                "enum": ["start", "output", "logs", "completed"], "type": "string"},
                "default": ["start", "output", "logs", "completed"]},
        }}
    response = {
        "title": "PredictionResponse", "type": "object", "properties": {
            "id": {"title": "Id", "type": "string"},
            "status": {"$ref": "#/components/schemas/Status"},
            "input": {"$ref": "#/components/schemas/Input"},
            "output": {"$ref": "#/components/schemas/Output"},
            "logs": {"title": "Logs", "type": "string", "default": ""},
            "error": {"title": "Error", "type": "string"},
            "metrics": {"title": "Metrics", "type": "object"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": "string", "format": "date-time"},
            "completed_at": {"type": "string", "format": "date-time"},
        }}
    predict_op = {
        "requestBody": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/PredictionRequest"}}}},
        "responses": {
            "200": {"description": "The finished prediction", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/PredictionResponse"}}}},
            "202": {"description": "Accepted (Prefer: respond-async)"},
            "422": {"description": "Validation Error"},
            "429": {"description": "The queue is full; see Retry-After"},
        }}
    components = {
        "Input": {**input_schema, "title": "Input"},
        "Output": {**output_schema, "title": "Output"},
        "Status": status,
        "PredictionRequest": request,
        "PredictionResponse": response,
    }
    # Nested types (a Struct, a dataclass) come as $defs with "#/$defs/X" references:
    # OpenAPI wants them among the components.
    for name in ("Input", "Output"):
        for def_name, body in components[name].pop("$defs", {}).items():
            components.setdefault(def_name, body)
    components = json.loads(json.dumps(components).replace('"#/$defs/', '"#/components/schemas/'))
    return {
        "openapi": "3.0.2",
        "info": {"title": title, "version": __version__},
        "paths": {
            "/": {"get": {"summary": "Root", "responses": {"200": {"description": "OK"}}}},
            "/health-check": {"get": {"summary": "Healthcheck",
                                      "responses": {"200": {"description": "OK"}}}},
            "/predictions": {"post": {"summary": "Predict", **predict_op}},
            "/predictions/{prediction_id}": {"put": {
                "summary": "Predict Idempotent",
                "parameters": [{"name": "prediction_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}], **predict_op}},
            "/predictions/{prediction_id}/cancel": {"post": {
                "summary": "Cancel",
                "parameters": [{"name": "prediction_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"},
                              "404": {"description": "No such prediction"}}}},
            "/shutdown": {"post": {"summary": "Start Shutdown",
                                   "responses": {"200": {"description": "OK"}}}},
        },
        "components": {"schemas": components},
    }
