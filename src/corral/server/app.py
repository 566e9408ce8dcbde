"""The Starlette app: Cog's prediction API over a corral ``Worker`` or ``Pool``.

``create_app(runner, *, token=None, host="127.0.0.1", insecure=False, ...)`` builds it; the
app starts the runner in the background if it is not started yet (``/health-check`` says
STARTING meanwhile, then READY, or SETUP_FAILED with the setup logs) and stops it when the
app shuts down if it started it. Predictions run the target's ``predict(**input)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, Callable

import msgspec
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..exceptions import ArgumentError, InvalidState, MethodNotFound, QueueFull, SetupError
from ..host.logbuffer import default_max_log_bytes
from .access import PREDICTION_ID
from .auth import BearerAuth, check_binding, drop_token_from_env
from .cogwire import masked, secret_fields, sse_listener  # Cog's wire details
from .connections import ConnectionLimits, server_config
from .drain import MESSAGE as DRAINING, Drain, draining_server
from .fetch import InputFetcher, networks_from_env as fetch_networks_from_env
from .files import DEFAULT_INLINE_MAX, FileInputError, Files, Workspace, file_fields, shown_inputs
from .instrument import Instrument
from .jsonbody import NonFiniteNumber, strict_json
from .limits import DEFAULT_MAX_BODY, BodyLimit
from .metrics import CONTENT_TYPE, Metrics
from .origin import OriginGuard, OriginPolicy
from .outbound import OutboundPolicy, OutboundRefused, networks_from_env, parse_networks
from .playground import PATHS as PLAYGROUND_PATHS, Playground, wants_page
from .predictions import EVENTS, MAX_ID_LENGTH, Prediction, Predictions, now_iso
from .retention import DEFAULT_MAX_RECORDS, DEFAULT_SECONDS, Retention
from .schema import openapi
from .sse import EventQueue, EventStream
from .trainings import Trainings, check_context
from .webhooks import DEFAULT_THROTTLE, WebhookSender

if TYPE_CHECKING:
    from ..host.caller import Runner

log = logging.getLogger("corral.server")


class Setup:
    """The runner's start, as /health-check reports it."""

    def __init__(self) -> None:
        self.status: str | None = None  # None (not begun), starting, succeeded, failed
        self.started_at: str | None = None
        self.completed_at: str | None = None
        self.logs = ""

    def to_json(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "completed_at": self.completed_at,
                "logs": self.logs, "status": self.status}


def create_app(runner: Runner, *, token: str | None = None, host: str | None = "127.0.0.1",
               insecure: bool = False, retry_after: int = 1,
               cancel_on_disconnect: bool = True, webhook_retries: int = 5,
               webhook_backoff: float = 0.1, stop_grace: float = 10.0,
               public_paths: tuple[str, ...] = ("/health-check",),
               on_shutdown: Callable[[], None] | None = None, drain_grace: float = 30.0,
               max_body_bytes: int = DEFAULT_MAX_BODY, retention: float = DEFAULT_SECONDS,
               max_records: int = DEFAULT_MAX_RECORDS, file_outputs: str = "data",
               file_inline_max: int = DEFAULT_INLINE_MAX,
               file_retention: float = DEFAULT_SECONDS,
               allowed_hosts: tuple[str, ...] | None = None,
               allowed_origins: tuple[str, ...] = (), allow_shutdown: bool = False,
               public_url: str | None = None,
               webhook_allow: tuple[str, ...] | None = None,
               webhook_throttle: float = DEFAULT_THROTTLE,
               max_log_bytes: int | None = None, playground: bool = True,
               train_mode: bool = False, fetch_inputs: bool = True,
               fetch_allow: tuple[str, ...] | None = None,
               fetch_max_bytes: int | None = None) -> Starlette:
    """The ASGI app serving ``runner`` (any ``Runner``: a ``corral.Worker``, a ``corral.Pool``,
    a remote or Ray worker).

    ``token``: the bearer token every route but ``public_paths`` needs; required when
    ``host`` is beyond loopback, unless ``insecure=True`` (else ValueError). A full queue
    answers 429 with ``Retry-After: retry_after``. ``on_shutdown`` is what POST /shutdown
    calls (``serve()`` makes it stop the server) once the predictions in flight have ended,
    at most ``drain_grace`` seconds after; meanwhile new predictions are answered 503.
    Bodies over ``max_body_bytes`` are answered 413. Finished records are kept
    ``retention`` seconds, and at most ``max_records`` of them. File outputs come back as
    data: URLs (``file_outputs="data"``) up to ``file_inline_max`` bytes, else (or with
    ``file_outputs="url"``) as /files/{id} links kept ``file_retention`` seconds; see
    files.py. Links start with ``public_url`` when given, else with the address the server
    is bound to (never with the request's Host header).

    Browsers (origin.py): the Host header must name this server (``allowed_hosts`` adds
    names), a request with a foreign ``Origin`` is 403 (``allowed_origins`` adds origins),
    and a request that reached an address beyond loopback is refused without a token,
    whatever ``host`` says. POST /shutdown works only with a token or ``allow_shutdown``.
    Webhook URLs must resolve to public addresses only, unless their network is in
    ``webhook_allow`` (CIDRs; default: the ``CORRAL_WEBHOOK_ALLOW`` environment variable);
    output and logs updates are sent at most every ``webhook_throttle`` seconds
    (webhooks.py). Each prediction keeps the newest ``max_log_bytes`` of its logs
    (default ``CORRAL_MAX_LOG_BYTES`` or 1 MiB), a marker line in place of the rest.
    A file input given as an http(s) URL is fetched (``fetch_inputs``; fetch.py) when its
    host resolves to public addresses or to ``fetch_allow`` networks (default: the
    ``CORRAL_FETCH_ALLOW`` environment variable), up to ``fetch_max_bytes`` (default:
    ``max_body_bytes``, as for an upload).
    ``playground``: serve the browser playground at ``GET /`` (to browsers) and
    ``GET /playground``; its static files need no token (see playground/).
    /trainings runs the target's ``train`` (``train_mode``: its ``predict`` too, for a
    cog.yaml ``train:`` function); see trainings.py. See docs/security.md."""
    check_binding(host, token, insecure)
    if token is not None:  # workers inherit the environment: never hand them the token
        drop_token_from_env(token)
    policy = OriginPolicy(token=token is not None, insecure=insecure, bind_host=host,
                          allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)
    fetcher = None
    if fetch_inputs:
        fetcher = InputFetcher(
            allow=fetch_networks_from_env() if fetch_allow is None
            else parse_networks(fetch_allow),
            max_bytes=max_body_bytes if fetch_max_bytes is None else fetch_max_bytes)
    files = Files(mode=file_outputs, inline_max=file_inline_max, retention=file_retention,
                  fetcher=fetcher)
    service = Predictions(runner, retention=Retention(retention, max_records), files=files,
                          max_log_bytes=max_log_bytes)
    drain = Drain(service, drain_grace)
    allowed_nets = networks_from_env() if webhook_allow is None \
        else parse_networks(webhook_allow)
    webhooks = WebhookSender(retries=webhook_retries, backoff=webhook_backoff,
                             policy=OutboundPolicy(allowed_nets), throttle=webhook_throttle)
    service.on_create.append(webhooks.attach)
    sse_log_bytes = default_max_log_bytes() if max_log_bytes is None else max_log_bytes
    metrics = Metrics(runner)
    setup = Setup()
    state = {"owned": False, "shutdown": on_shutdown}

    async def method_schemas() -> Any:
        """The method's schemas (``runner.describe()``, fetched once). A failure is not
        kept: it raises, and the next call asks again."""
        if state.get("schemas") is None:
            state["schemas"] = await asyncio.to_thread(runner.describe)
        return state["schemas"].get(service.method)

    def not_ready() -> Response | None:
        if setup.status == "failed":
            return JSONResponse({"detail": "setup failed"}, status_code=503)
        if runner.state != "ready":
            return JSONResponse({"detail": f"the model is {runner.state}"}, status_code=503,
                                headers={"Retry-After": str(retry_after)})
        return None

    def link_base(scope: dict) -> str:
        """Where /files links point: ``public_url``, else the bound address (a server on
        every address, without ``public_url``, gives links relative to the server)."""
        root = scope.get("root_path", "")
        if public_url:
            return public_url.rstrip("/") + root
        server = scope.get("server")
        if not server or server[0] in ("0.0.0.0", "::", ""):
            return root
        address = server[0] if ":" not in server[0] else f"[{server[0]}]"
        port = f":{server[1]}" if server[1] is not None else ""
        return f"{scope.get('scheme', 'http')}://{address}{port}{root}"

    async def predict(request: Request, pid: str | None = None) -> Response:
        if pid is not None and len(pid) > MAX_ID_LENGTH:
            return _invalid([{"loc": ["path", "prediction_id"], "type": "value_error",
                              "msg": f"the id is longer than {MAX_ID_LENGTH} characters"}])
        if drain.draining and (pid is None or service.get(pid) is None):
            return JSONResponse({"detail": DRAINING}, status_code=503,
                                headers={"Connection": "close"})
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media == "multipart/form-data":
            return await predict_form(request, pid)
        if media and media != "application/json" and not media.endswith("+json"):
            return JSONResponse({"detail": f"unsupported Content-Type {media!r}: send "
                                           "application/json or multipart/form-data"},
                                status_code=415)
        try:
            body = strict_json(await request.body())
        except NonFiniteNumber as exc:
            return _invalid([{"loc": ["body"], "msg": str(exc),
                              "type": "value_error.jsondecode"}])
        except (ValueError, UnicodeDecodeError):
            return _invalid([{"loc": ["body"], "msg": "the body is not valid JSON",
                              "type": "value_error.jsondecode"}])
        except RecursionError:  # json's decoder recurses once per level of nesting
            return _invalid([{"loc": ["body"], "msg": "the body is nested too deeply",
                              "type": "value_error.jsondecode"}])
        if body is None:
            body = {}
        if not isinstance(body, dict):
            return _invalid([{"loc": ["body"], "msg": "the body must be a JSON object",
                              "type": "type_error.dict"}])
        inp = body.get("input") or {}
        if not isinstance(inp, dict):
            return _invalid([{"loc": ["body", "input"], "msg": "input must be an object",
                              "type": "type_error.dict"}])
        if not isinstance(body.get("id"), (str, type(None))):
            return _invalid([{"loc": ["body", "id"], "msg": "the id must be a string",
                              "type": "type_error.str"}])
        if len(body.get("id") or "") > MAX_ID_LENGTH:
            return _invalid([{"loc": ["body", "id"], "type": "value_error",
                              "msg": f"the id is longer than {MAX_ID_LENGTH} characters"}])
        if pid is not None and body.get("id") not in (None, pid):
            return _invalid([{"loc": ["body", "id"], "msg": "the id in the body differs from "
                              "the one in the path", "type": "value_error"}])
        return await run(request, body, inp, pid)

    async def predict_form(request: Request, pid: str | None) -> Response:
        """A multipart request: the form's parts are the inputs (uploads.py)."""
        from .uploads import FormError, read_form

        ws = files.workspace(lambda: link_base(request.scope))
        try:
            form = await read_form(request, ws)
        except FormError as exc:
            ws.close()
            return _invalid([{"loc": ["body"], "msg": str(exc), "type": "value_error"}])
        except ClientDisconnect:  # gone mid-upload: nobody to answer, nothing to log
            ws.close()
            return Response(status_code=400)
        except BaseException:  # too large (413), the client left, cancelled: no prediction
            ws.close()
            raise
        return await run(request, {"id": pid}, form.shown, pid, form.inputs, ws)

    async def run(request: Request, body: dict[str, Any], inp: dict[str, Any],
                  pid: str | None, args: dict[str, Any] | None = None,
                  ws: Any = None) -> Response:
        """Validate the rest of the request and run the prediction; ``ws`` is owned here
        until a record takes it."""
        if ws is None:
            ws = files.workspace(lambda: link_base(request.scope))
        try:
            return await run_in(request, body, inp, pid, args, ws)
        finally:
            if not ws.taken:
                ws.close()

    async def run_in(request: Request, body: dict[str, Any], inp: dict[str, Any],
                     pid: str | None, args: dict[str, Any] | None, ws: Workspace) -> Response:
        pid = pid or body.get("id")
        webhook = body.get("webhook")
        if webhook is not None and not (isinstance(webhook, str)
                                        and webhook.startswith(("http://", "https://"))):
            return _invalid([{"loc": ["body", "webhook"], "type": "value_error",
                              "msg": "the webhook must be an http(s) URL"}])
        events = body.get("webhook_events_filter")
        if events is not None and (not isinstance(events, list)
                                   or any(e not in EVENTS for e in events)):
            return _invalid([{"loc": ["body", "webhook_events_filter"], "type": "value_error",
                              "msg": f"must be a list of {', '.join(EVENTS)}"}])
        context_problems = check_context(body.get("context"))
        if context_problems:
            return _invalid(context_problems)
        respond_async = "respond-async" in request.headers.get("prefer", "")
        wants_sse = "text/event-stream" in request.headers.get("accept", "")

        existing = service.get(pid) if pid else None
        if webhook is not None and existing is None:
            try:
                await webhooks.policy.resolve(webhook)
            except OutboundRefused as exc:
                return _invalid([{"loc": ["body", "webhook"], "type": "value_error",
                                  "msg": str(exc)}])
        if existing is not None:  # idempotent: the same prediction, never run twice
            if respond_async:
                return _FastJSON(existing.to_json(), status_code=202)
            await existing.done.wait()
            return _answer(existing)
        refused = not_ready()
        if refused is not None:
            return refused
        if files.fields is None:
            try:
                # Without the schema no file input could be checked (a server path would
                # reach the worker): answer 503 and ask again next time.
                files.fields = file_fields(getattr(await method_schemas(), "input", None))
            except Exception as exc:  # noqa: BLE001 - e.g. the worker is restarting
                return JSONResponse({"detail": f"the model's input schema is not known yet: "
                                               f"{exc}"}, status_code=503,
                                    headers={"Retry-After": str(retry_after)})
        if files.fields:
            try:
                args = await files.resolve(args if args is not None else inp, ws)
            except FileInputError as exc:
                return _invalid([{"loc": ["body", "input", *exc.loc], "msg": exc.msg,
                                  "type": "value_error"}])
            # The record shows a large data: URL as a placeholder, not its megabytes.
            inp = shown_inputs(inp, args)

        queue = EventQueue(sse_log_bytes) if wants_sse else None
        listeners = (sse_listener(queue),) if queue is not None else ()
        secrets = state.get("secrets")  # Cog's x-cog-secret inputs, masked in the record
        if secrets is None:
            try:
                secrets = state["secrets"] = secret_fields(
                    getattr(await method_schemas(), "input", None))
            except Exception:  # noqa: BLE001 - no schema yet: asked again next time
                secrets = ()
        try:
            pred = service.start(masked(inp, secrets), pid, webhook, events, listeners,
                                 args=args if args is not None else inp, workspace=ws,
                                 context=body.get("context"))
            ws.taken = True
        except QueueFull as exc:
            return JSONResponse({"detail": str(exc)}, status_code=429,
                                headers={"Retry-After": str(retry_after)})
        except ArgumentError as exc:
            return _invalid([{"loc": ["body", "input"], "msg": str(exc),
                              "type": "value_error"}])
        except (MethodNotFound, InvalidState) as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503)
        except TypeError as exc:  # an input value that cannot be sent
            return _invalid([{"loc": ["body", "input"], "msg": str(exc), "type": "type_error"}])
        except ValueError as exc:  # nested too deeply, or too big for one frame
            return _invalid([{"loc": ["body", "input"], "msg": str(exc), "type": "value_error"}])
        request.scope[PREDICTION_ID] = pred.id
        if queue is not None:
            def disconnected() -> None:
                if cancel_on_disconnect:
                    service.cancel(pred)
            return EventStream(queue, disconnected)
        if respond_async:
            return _FastJSON(pred.to_json(), status_code=202)
        await pred.done.wait()
        return _answer(pred)

    async def create_prediction(request: Request) -> Response:
        return await predict(request)

    async def put_prediction(request: Request) -> Response:
        return await predict(request, request.path_params["prediction_id"])

    async def get_prediction(request: Request) -> Response:
        pred = service.get(request.path_params["prediction_id"])
        if pred is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return _FastJSON(pred.to_json())

    async def cancel(request: Request) -> Response:
        pred = service.get(request.path_params["prediction_id"])
        if pred is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        service.cancel(pred)
        return JSONResponse({})

    async def health_check(request: Request) -> Response:
        return JSONResponse({"status": await asyncio.to_thread(_health_status, runner, setup),
                             "setup": setup.to_json()})

    page = Playground() if playground else None

    async def root(request: Request) -> Response:
        if page is not None and wants_page(request):
            return await page.page(request)
        return JSONResponse({"openapi_url": "/openapi.json", "docs_url": None},
                            headers={"Vary": "Accept"} if page is not None else None)

    async def openapi_json(request: Request) -> Response:
        info = schemas = None
        with contextlib.suppress(Exception):
            info = runner.methods.get(service.method)
        with contextlib.suppress(Exception):  # not ready yet: an open Input for now
            schemas = await method_schemas()
        train = None
        with contextlib.suppress(Exception):
            method = trainings.method()
            if method is not None:
                train = (runner.methods.get(method), await trainings.schema())
        return JSONResponse(openapi(info, schemas, title=runner.target_name,
                                    train=train))

    async def shutdown(request: Request) -> Response:
        if token is None and not allow_shutdown:
            # Without a token anyone who reaches the port could stop the server.
            return JSONResponse({"detail": "POST /shutdown is off: give the server a token, "
                                           "or allow it with allow_shutdown=True "
                                           "(--allow-shutdown)"}, status_code=403)
        if state["shutdown"] is not None:  # else no server to stop: nothing to drain for
            drain.begin(state["shutdown"])
        return JSONResponse({})

    async def get_file(request: Request) -> Response:
        entry = files.store.get(request.path_params["file_id"])
        if entry is None:
            return JSONResponse({"detail": "no such file (it may have expired)"},
                                status_code=404)
        # attachment + nosniff: a client's upload must never run as a page of this origin
        return FileResponse(entry.path, media_type=entry.content_type, filename=entry.name,
                            headers={"X-Content-Type-Options": "nosniff"})

    async def metrics_route(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        app.state.loop = asyncio.get_running_loop()
        await asyncio.to_thread(files.open)
        task = None
        if runner.state == "new":
            state["owned"] = True
            task = asyncio.get_running_loop().create_task(_start(runner, setup))
        else:
            setup.status = "succeeded"
        sweeper = asyncio.get_running_loop().create_task(_sweep(files))
        try:
            yield
        finally:
            sweeper.cancel()
            await drain.wait()
            await service.aclose()
            await trainings.service.aclose()
            await webhooks.aclose()
            if fetcher is not None:
                await fetcher.aclose()
            if task is not None:
                await task
            if state["owned"]:
                await asyncio.to_thread(runner.stop, stop_grace)
            await asyncio.to_thread(files.close)

    trainings = Trainings(runner, files, webhooks, Retention(retention, max_records), not_ready,
                          train_mode=train_mode, retry_after=retry_after,
                          max_log_bytes=max_log_bytes)
    # The prediction routes first: Starlette tries each route's pattern in turn, and no
    # other path overlaps them (measured: 8 patterns tried per prediction before).
    routes = [
        Route("/predictions", create_prediction, methods=["POST"]),
        Route("/predictions/{prediction_id}", put_prediction, methods=["PUT"]),
        Route("/predictions/{prediction_id}", get_prediction, methods=["GET"]),
        Route("/predictions/{prediction_id}/cancel", cancel, methods=["POST"]),
        *trainings.routes(),
        Route("/", root, methods=["GET"]),
        Route("/health-check", health_check, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/shutdown", shutdown, methods=["POST"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/files/{file_id}", get_file, methods=["GET"]),
        *(page.routes() if page is not None else ()),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    # The last added is the outermost: metrics and access log, Host/Origin rules, auth,
    # body limit, routes.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if token is not None:
        public = (*public_paths, *PLAYGROUND_PATHS) if page is not None else public_paths
        app.add_middleware(BearerAuth, token=token, public=public)
    app.add_middleware(OriginGuard, policy=policy)
    app.add_middleware(Instrument, metrics=metrics)
    app.state.predictions = service
    app.state.trainings = trainings.service
    app.state.setup = setup
    app.state.metrics = metrics
    app.state.drain = drain
    app.state.files = files

    def set_shutdown(hook: Callable[[], None]) -> None:
        state["shutdown"] = hook

    app.state.set_shutdown = set_shutdown
    return app


async def _sweep(files: Files) -> None:
    """Delete expired /files entries now and then, also while no request comes."""
    interval = min(max(files.store.retention.seconds / 4, 1.0), 60.0)
    while True:
        await asyncio.sleep(interval)
        files.store.sweep()


def _invalid(problems: list[dict[str, Any]]) -> Response:
    return JSONResponse({"detail": problems}, status_code=422)


class _FastJSON(JSONResponse):
    """JSON encoded by msgspec: several times faster than json.dumps on big strings (a
    data: URL output), same bytes for the rest, and always valid JSON (a NaN or infinity
    in an output is null; json.dumps would raise, or write NaN). Every answer that holds a
    record uses it."""

    def render(self, content: Any) -> bytes:
        return _encode(content)


_encode = msgspec.json.Encoder().encode


def _answer(pred: Prediction) -> Response:
    if pred.status == "failed" and pred.error_type is not None \
            and issubclass(pred.error_type, ArgumentError):
        problems = getattr(pred, "problems", None) or [
            {"loc": ["body", "input"], "msg": pred.error, "type": "value_error"}]
        return _invalid(problems)
    return _FastJSON(pred.to_json())


async def _start(runner: Runner, setup: Setup) -> None:
    setup.status = "starting"
    setup.started_at = now_iso()
    try:
        await asyncio.to_thread(runner.start)
    except SetupError as exc:
        setup.logs = exc.logs if isinstance(exc.logs, str) else "".join(exc.logs or ())
        setup.status = "failed"
        log.error("setup failed: %s", exc)
    except Exception as exc:  # noqa: BLE001 - reported by /health-check
        setup.logs = str(exc)
        setup.status = "failed"
        log.error("the runner did not start: %s", exc)
    else:
        setup.status = "succeeded"
    setup.completed_at = now_iso()


def _health_status(runner: Runner, setup: Setup) -> str:
    if setup.status in (None, "starting"):
        return "STARTING"
    if setup.status == "failed":
        return "SETUP_FAILED"
    state = runner.state
    if state in ("new", "starting"):
        return "STARTING"
    if state != "ready":
        return "DEFUNCT"
    usage = runner.usage()
    if usage.ready == 0:  # (a Pool whose workers are all restarting or failed)
        return "DEFUNCT"
    return "BUSY" if usage.busy >= usage.slots else "READY"


def serve(runner: Runner, *, host: str = "127.0.0.1", port: int = 5000,
          token: str | None = None, insecure: bool = False,
          limits: ConnectionLimits | None = None, **app_kwargs: Any) -> None:
    """Serve ``runner`` with uvicorn until SIGTERM/SIGINT or POST /shutdown, both of which
    drain first (a second signal exits at once). ``token`` defaults to the CORRAL_TOKEN
    environment variable (then removed from the environment, which workers inherit).
    ``limits``: header/body/keep-alive timeouts and the connection cap (connections.py).
    Requests are logged as JSON on ``corral.access`` (uvicorn's own access log is off).
    The process's garbage collector is tuned for serving (gctune.py)."""
    if token is None:
        token = os.environ.get("CORRAL_TOKEN") or None
    app = create_app(runner, token=token, host=host, insecure=insecure, **app_kwargs)
    server = draining_server(server_config(app, host, port, limits, log_level="info",
                                           access_log=False), app)

    def stop() -> None:
        server.should_exit = True

    app.state.set_shutdown(stop)
    access = logging.getLogger("corral.access")
    if not access.handlers:  # the JSON lines as they are, one a line, on stderr
        from .access import Lines

        access.addHandler(Lines())
        access.setLevel(logging.INFO)
        access.propagate = False
    from .gctune import tune

    tune()  # (the process serves from here on)
    server.run()
