"""Cog's training API: ``POST /trainings``, ``PUT /trainings/{id}`` (idempotent), ``GET``
and ``POST .../cancel``, as coglet serves them in train mode.

A training is a prediction record run on the target's ``train`` method (a Cog ``train()``
function or a Trainer class; with ``corral serve --train`` the target is cog.yaml's
``train`` entry, whose function is also its ``predict``). Records, webhooks, file inputs
and outputs, retention and cancellation are the prediction API's own (predictions.py,
webhooks.py, files.py); SSE is refused, as coglet refuses it for trainings. A target
without a train method answers 404 here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..exceptions import ArgumentError, InvalidState, MethodNotFound, QueueFull
from .cogwire import masked, secret_fields
from .files import FileInputError, file_fields
from .jsonbody import NonFiniteNumber, strict_json
from .outbound import OutboundRefused
from .predictions import EVENTS, MAX_ID_LENGTH, Predictions

if TYPE_CHECKING:
    from ..host.caller import Runner


class Trainings:
    """The /trainings routes of one app."""

    def __init__(self, runner: Runner, files: Any, webhooks: Any, retention: Any,
                 not_ready: Any, train_mode: bool = False, retry_after: int = 1,
                 max_log_bytes: int | None = None):
        self.runner = runner
        self.files = files
        self.service = Predictions(runner, method="train", retention=retention, files=files,
                                   max_log_bytes=max_log_bytes)
        self.service.on_create.append(webhooks.attach)
        self.webhooks = webhooks
        self.not_ready = not_ready
        self.train_mode = train_mode
        self.retry_after = retry_after
        self._schema: Any = None
        self._fields: Any = None

    def method(self) -> str | None:
        """``train``, or ``predict`` in train mode for a function target; None: no training."""
        try:
            methods = self.runner.methods
        except Exception:  # noqa: BLE001 - not started yet
            return None
        if "train" in methods:
            return "train"
        return "predict" if self.train_mode and "predict" in methods else None

    async def schema(self) -> Any:
        method = self.method()
        if method is None:
            return None
        if self._schema is None:
            self._schema = (await asyncio.to_thread(self.runner.describe)).get(method)
        return self._schema

    def routes(self) -> list[Route]:
        return [Route("/trainings", self.create, methods=["POST"]),
                Route("/trainings/{training_id}", self.put, methods=["PUT"]),
                Route("/trainings/{training_id}", self.get, methods=["GET"]),
                Route("/trainings/{training_id}/cancel", self.cancel, methods=["POST"])]

    async def create(self, request: Request) -> Response:
        return await self._train(request, None)

    async def put(self, request: Request) -> Response:
        return await self._train(request, request.path_params["training_id"])

    async def get(self, request: Request) -> Response:
        record = self.service.get(request.path_params["training_id"])
        if record is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return JSONResponse(record.to_json())

    async def cancel(self, request: Request) -> Response:
        record = self.service.get(request.path_params["training_id"])
        if record is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        self.service.cancel(record)
        return JSONResponse({})

    async def _train(self, request: Request, tid: str | None) -> Response:
        from .app import _answer, _invalid

        if "text/event-stream" in request.headers.get("accept", ""):
            return JSONResponse({"detail": "trainings do not stream: ask without "
                                           "Accept: text/event-stream"}, status_code=406)
        refused = self.not_ready()
        if refused is not None:
            return refused
        method = self.method()
        if method is None:
            return JSONResponse({"detail": "this model has no train()"}, status_code=404)
        self.service.method = method
        if tid is not None and len(tid) > MAX_ID_LENGTH:
            return _invalid([{"loc": ["path", "training_id"], "type": "value_error",
                              "msg": f"the id is longer than {MAX_ID_LENGTH} characters"}])
        try:
            body = strict_json(await request.body())
        except NonFiniteNumber as exc:
            return _invalid([{"loc": ["body"], "msg": str(exc),
                              "type": "value_error.jsondecode"}])
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _invalid([{"loc": ["body"], "msg": "the body is not valid JSON",
                              "type": "value_error.jsondecode"}])
        if body is None:
            body = {}
        problems = _check_body(body, tid)
        if problems:
            return _invalid(problems)
        tid = tid or body.get("id")
        existing = self.service.get(tid) if tid else None
        if body.get("webhook") is not None and existing is None:
            try:  # the prediction routes' check: public addresses only (outbound.py)
                await self.webhooks.policy.resolve(body["webhook"])
            except OutboundRefused as exc:
                return _invalid([{"loc": ["body", "webhook"], "type": "value_error",
                                  "msg": str(exc)}])
        if existing is not None:  # idempotent: the same training, never run twice
            return JSONResponse(existing.to_json(), status_code=202)
        inp = body.get("input") or {}
        try:
            schema = await self.schema()
        except Exception as exc:  # noqa: BLE001 - e.g. the worker is restarting
            return JSONResponse({"detail": f"the training schema is not known yet: {exc}"},
                                status_code=503, headers={"Retry-After": str(self.retry_after)})
        if self._fields is None:
            self._fields = file_fields(getattr(schema, "input", None))
        ws = self.files.workspace(lambda: str(request.base_url))
        try:
            args = inp
            if self._fields:
                try:
                    args = await self.files.resolve(inp, ws, self._fields)
                except FileInputError as exc:
                    return _invalid([{"loc": ["body", "input", *exc.loc], "msg": exc.msg,
                                      "type": "value_error"}])
            shown = masked(inp, secret_fields(getattr(schema, "input", None)))
            try:
                record = self.service.start(shown, tid, body.get("webhook"),
                                            body.get("webhook_events_filter"), args=args,
                                            workspace=ws, context=body.get("context"))
                ws.taken = True
            except QueueFull as exc:
                return JSONResponse({"detail": str(exc)}, status_code=429,
                                    headers={"Retry-After": str(self.retry_after)})
            except ArgumentError as exc:
                return _invalid([{"loc": ["body", "input"], "msg": str(exc),
                                  "type": "value_error"}])
            except (MethodNotFound, InvalidState) as exc:
                return JSONResponse({"detail": str(exc)}, status_code=503)
            except (TypeError, ValueError) as exc:
                return _invalid([{"loc": ["body", "input"], "msg": str(exc),
                                  "type": "value_error"}])
        finally:
            if not ws.taken:
                ws.close()
        if "respond-async" in request.headers.get("prefer", ""):
            return JSONResponse(record.to_json(), status_code=202)
        await record.done.wait()
        return _answer(record)


def _check_body(body: Any, tid: str | None) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return [{"loc": ["body"], "msg": "the body must be a JSON object", "type": "type_error.dict"}]
    if not isinstance(body.get("input") or {}, dict):
        return [{"loc": ["body", "input"], "msg": "input must be an object",
                 "type": "type_error.dict"}]
    if not isinstance(body.get("id"), (str, type(None))):
        return [{"loc": ["body", "id"], "msg": "the id must be a string", "type": "type_error.str"}]
    if len(body.get("id") or "") > MAX_ID_LENGTH:
        return [{"loc": ["body", "id"], "type": "value_error",
                 "msg": f"the id is longer than {MAX_ID_LENGTH} characters"}]
    if tid is not None and body.get("id") not in (None, tid):
        return [{"loc": ["body", "id"], "msg": "training ID must match the ID supplied in "
                 "the URL", "type": "value_error"}]
    webhook = body.get("webhook")
    if webhook is not None and not (isinstance(webhook, str)
                                    and webhook.startswith(("http://", "https://"))):
        return [{"loc": ["body", "webhook"], "msg": "the webhook must be an http(s) URL",
                 "type": "value_error"}]
    events = body.get("webhook_events_filter")
    if events is not None and (not isinstance(events, list) or any(e not in EVENTS for e in events)):
        return [{"loc": ["body", "webhook_events_filter"], "type": "value_error",
                 "msg": f"must be a list of {', '.join(EVENTS)}"}]
    problems = check_context(body.get("context"))
    return problems


def check_context(context: Any) -> list[dict[str, Any]]:
    """Cog's request ``context``: an object of strings (or absent)."""
    if context is None:
        return []
    if not isinstance(context, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in context.items()):
        return [{"loc": ["body", "context"], "msg": "context must be an object of strings",
                 "type": "type_error.dict"}]
    return []
