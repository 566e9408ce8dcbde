"""/openapi.json in Cog's shape: components.schemas.Input, Output, PredictionRequest,
PredictionResponse, Status, and the paths of the prediction API.

Input and Output come from the method's JSON Schemas when the worker reports them
(``MethodInfo.input_schema`` / ``output_schema``); until then Input is an open object."""

from __future__ import annotations

from typing import Any

from .._version import __version__


def openapi(method_info: Any, title: str = "corral") -> dict[str, Any]:
    input_schema = getattr(method_info, "input_schema", None) or {
        "title": "Input", "type": "object", "additionalProperties": True}
    output_schema = getattr(method_info, "output_schema", None) or {"title": "Output"}
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
        "components": {"schemas": {
            "Input": {**input_schema, "title": "Input"},
            "Output": {**output_schema, "title": "Output"},
            "Status": status,
            "PredictionRequest": request,
            "PredictionResponse": response,
        }},
    }
