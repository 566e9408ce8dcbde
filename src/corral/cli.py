"""The ``corral`` command: run a prediction, print a target's schema, serve it over HTTP.

``corral predict TARGET -i key=value ...`` parses each value by the method's input schema
(``Worker.describe()``), lets the worker check and convert it (``options(convert=True)``),
streams the output, logs and a progress bar as they come. ``corral schema TARGET`` prints
the JSON Schemas; ``corral serve TARGET`` runs the HTTP server (needs the ``server`` extra).

Exit status: 0 on success, 1 when the prediction (or the target's setup) fails, 2 for a
bad command line or bad inputs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Iterable

import click

from ._version import __version__

EXIT_FAILED = 1
EXIT_USAGE = 2

TARGET_HELP = "path/to/file.py:Name or package.module:Name"


class Failure(click.ClickException):
    """An error message and an exit status (1 by default), printed without a usage line."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


# -- inputs --------------------------------------------------------------------------------


def _types(prop: dict[str, Any] | None) -> tuple[set[str], bool]:
    """The JSON types a property accepts, and whether a string of it is a URI (a path)."""
    if not isinstance(prop, dict):
        return set(), False
    types: set[str] = set()
    uri = False
    t = prop.get("type")
    if isinstance(t, str):
        types.add(t)
    elif isinstance(t, list):
        types.update(x for x in t if isinstance(x, str))
    if prop.get("format") == "uri":
        uri = True
    if "$ref" in prop:
        types.add("object")
    if "enum" in prop and not types:
        types.update({"string"} if all(isinstance(v, str) for v in prop["enum"])
                     else {"string", "number"})
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in prop.get(key) or ():
            sub_types, sub_uri = _types(sub)
            types |= sub_types
            uri = uri or sub_uri
    return types, uri


def parse_value(text: str, prop: dict[str, Any] | None) -> Any:
    """One ``-i`` value as the worker should receive it, by its property's schema.

    ``@path``: the path itself where the property is a URI string (a Path or corral.File
    parameter), else the file's text, parsed like a value given inline. ``@@...`` is a
    literal ``@...``. A string property keeps the text; an array or object one parses it
    as JSON; others (numbers, booleans) go as text, which the worker converts. Raises
    ValueError for a file that cannot be read."""
    types, uri = _types(prop)
    if text.startswith("@@"):
        text = text[1:]
    elif text.startswith("@"):
        path = os.path.expanduser(text[1:])
        if uri:
            if not os.path.exists(path):
                raise ValueError(f"no such file: {path}")
            return os.path.abspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text") from None
        if "string" in types:
            return text
        text = text.strip()
    if "string" in types:
        return text
    if types & {"array", "object"}:
        try:
            return json.loads(text)
        except ValueError:
            return text  # the worker says what it expected
    if "null" in types and text in ("null", "None", ""):
        return None
    return text


def parse_inputs(pairs: Iterable[str], schema: dict[str, Any] | None
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``key=value`` pairs as keyword arguments, and the problems found without the worker
    (bad syntax, a name given twice, an unreadable file)."""
    props = (schema or {}).get("properties") or {}
    kwargs: dict[str, Any] = {}
    problems: list[dict[str, Any]] = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append({"loc": [pair], "msg": "expected key=value"})
            continue
        if key in kwargs:
            problems.append({"loc": [key], "msg": "given more than once"})
            continue
        try:
            kwargs[key] = parse_value(text, props.get(key))
        except ValueError as exc:
            problems.append({"loc": [key], "msg": str(exc)})
            kwargs[key] = None
    if problems and schema is not None:  # the rest that can be told without the worker
        for key in kwargs:
            if key not in props and schema.get("additionalProperties") is not True:
                problems.append({"loc": [key], "msg": "unexpected input"})
        for key in schema.get("required") or ():
            if key not in kwargs:
                problems.append({"loc": [key], "msg": "required input is missing"})
    return kwargs, problems


def format_problems(method: str, problems: list[dict[str, Any]]) -> str:
    lines = [f"invalid inputs for {method}:"]
    for p in problems:
        loc = ".".join(str(x) for x in p.get("loc") or ()) or "(input)"
        lines.append(f"  {loc}: {p.get('msg', 'invalid')}")
    return "\n".join(lines)


# -- outputs -------------------------------------------------------------------------------


def _as_json(value: Any, indent: int | None = None) -> str:
    from ._jsonable import jsonable

    return json.dumps(jsonable(value), ensure_ascii=False, indent=indent)


def _echo_value(value: Any) -> None:
    """One output (a result or a chunk) on stdout: text as it is, bytes raw, paths as
    paths, anything else as JSON."""
    if isinstance(value, str):
        click.echo(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out = click.get_binary_stream("stdout")
        sys.stdout.flush()
        out.write(bytes(value))
        out.flush()
    elif isinstance(value, os.PathLike):
        click.echo(os.fspath(value))
    else:
        click.echo(_as_json(value, indent=2))
    sys.stdout.flush()


class _Events:
    """Logs to stderr and a rich progress bar on stderr, as the events arrive."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.progress: Any = None
        self.task: Any = None

    def log(self, text: str) -> None:
        text = text[:-1] if text.endswith("\n") else text
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def step(self, step: float, total: float | None, phase: str | None) -> None:
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=self.console, redirect_stdout=False,
                                     redirect_stderr=False)
            self.progress.start()
            self.task = self.progress.add_task(phase or "predicting", total=total)
        update: dict[str, Any] = {"completed": step, "total": total}
        if phase:
            update["description"] = phase
        self.progress.update(self.task, **update)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


# -- commands ------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="corral")
def cli() -> None:
    """Run model code in isolated worker processes: predict, show schemas, serve HTTP,
    manage plugins.

    \b
    Examples:
      corral predict model.py:Model -i prompt="a cat" -i steps=20
      corral schema model.py:Model
      corral serve model.py:Model --port 5000
      corral plugins list -p ./plugins
    """


def _start_worker(target: str, slots: int = 1) -> Any:
    from . import Worker
    from .exceptions import SetupError, WorkerError

    worker = Worker(target, slots=slots)
    try:
        worker.start()
    except SetupError as exc:
        if exc.error_type.endswith("TargetError"):  # no such file, module or name
            raise Failure(f"cannot load {target}: {exc}", EXIT_USAGE) from None
        logs = "\n".join(line.rstrip("\n") for line in exc.logs).strip()
        tb = (exc.remote_traceback or "").rstrip()
        raise Failure(f"the target's setup failed: {exc}"
                      + (f"\nsetup logs:\n{logs}" if logs else "")
                      + (f"\n{tb}" if tb else "")) from None
    except WorkerError as exc:
        raise Failure(f"cannot start {target}: {exc}") from None
    return worker


def _schemas(worker: Any, target: str) -> dict[str, Any]:
    from .exceptions import CorralError

    try:
        return worker.describe()
    except CorralError as exc:
        raise Failure(f"cannot describe {target}: {exc}") from None


def _pick(schemas: dict[str, Any], method: str) -> Any:
    if method not in schemas:
        known = ", ".join(sorted(schemas)) or "none"
        raise Failure(f"the target has no method {method!r} (methods: {known})", EXIT_USAGE)
    return schemas[method]


@cli.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", metavar="TARGET")
@click.option("-i", "--input", "inputs", multiple=True, metavar="KEY=VALUE",
              help="An input of the method (repeat for each). @path reads a file (a path "
                   "parameter gets the path), @@ a literal @; arrays and objects are JSON.")
@click.option("-m", "--method", default="predict", show_default=True,
              help="The method to call.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as JSON (a generator's chunks as JSON lines, one per "
                   "chunk as it comes; bytes and files as base64 data URLs, arrays as "
                   "lists).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop the prediction after this long (exit 1).")
def predict(target: str, inputs: tuple[str, ...], method: str, as_json: bool,
            timeout: float | None) -> None:
    """Run one prediction of TARGET and print its output as it comes.

    TARGET is path/to/file.py:Name or package.module:Name. Values are parsed by the
    method's type hints: "3" for an int, true/false for a bool, JSON for lists and dicts.
    Logs go to stderr, the output to stdout; a generator's chunks print as they are made.

    \b
    Examples:
      corral predict model.py:Model -i prompt="a cat" -i steps=20
      corral predict model.py:Model -i image=@photo.jpg -i tags='["a","b"]'
      corral predict model.py:Model -i text=@prompt.txt --json
      corral predict model.py:Model --method embed -i text=hello

    Exit status: 0 done, 1 the prediction failed, 2 bad inputs or usage.
    """
    worker = _start_worker(target)
    try:
        _run_method(worker, target, method, inputs, as_json, timeout)
    finally:
        worker.stop()


def _run_method(worker: Any, target: str, method: str, inputs: tuple[str, ...],
                as_json: bool, timeout: float | None) -> None:
    """Parse ``-i`` inputs by the method's schema, call it on a started worker and print
    what comes (shared by ``predict`` and ``plugins call``)."""
    from .exceptions import ArgumentError, CallTimeout, Cancelled, CorralError, RemoteError
    from .protocol.messages import Chunk, Done, Log, Progress

    events = _Events()
    try:
        schema = _pick(_schemas(worker, target), method)
        kwargs, problems = parse_inputs(inputs, schema.input)
        if problems:
            raise Failure(format_problems(method, problems), EXIT_USAGE)
        streamed = False
        result: Any = None
        stream = worker.options(convert=True, timeout=timeout).watch(method, **kwargs)
        try:
            for event in stream:
                if isinstance(event, Log):
                    events.log(event.text)
                elif isinstance(event, Progress):
                    events.step(event.step, event.total, event.phase)
                elif isinstance(event, Chunk):
                    streamed = True
                    if as_json:  # JSON lines: one per chunk, as it comes
                        click.echo(_as_json(event.value))
                    else:
                        _echo_value(event.value)
                elif isinstance(event, Done):
                    result = event.value
        finally:
            stream.close()
            events.close()
        if as_json and not streamed:
            click.echo(_as_json(result))
        elif not streamed and result is not None:
            _echo_value(result)
    except ArgumentError as exc:
        problems = exc.problems or [{"loc": [], "msg": exc.detail}]
        raise Failure(format_problems(method, problems), EXIT_USAGE) from None
    except RemoteError as exc:
        tb = exc.remote_traceback.rstrip()
        raise Failure(f"the prediction failed: {exc}" + (f"\n{tb}" if tb else "")) from None
    except CallTimeout as exc:
        raise Failure(f"the prediction timed out: {exc}") from None
    except Cancelled as exc:
        raise Failure(f"the prediction was cancelled: {exc}") from None
    except CorralError as exc:  # a WorkerError too
        raise Failure(f"the prediction failed: {exc}") from None
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    finally:
        events.close()


@cli.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", metavar="TARGET")
@click.option("-m", "--method", default=None,
              help="Only this method (default: every method, by name).")
def schema(target: str, method: str | None) -> None:
    """Print the JSON Schemas of TARGET's inputs and outputs, as JSON.

    Built from the type hints (defaults, msgspec.Meta constraints and descriptions
    included). Without --method: {"method": {"input": ..., "output": ...}, ...}.

    \b
    Examples:
      corral schema model.py:Model
      corral schema model.py:Model --method predict | jq .input.properties
    """
    worker = _start_worker(target)
    try:
        schemas = _schemas(worker, target)
        if method is not None:
            s = _pick(schemas, method)
            out: Any = {"input": s.input, "output": s.output}
        else:
            out = {name: {"input": s.input, "output": s.output}
                   for name, s in sorted(schemas.items())}
    finally:
        worker.stop()
    click.echo(json.dumps(out, indent=2))


@cli.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", metavar="TARGET", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Beyond loopback a token is required (or --insecure).")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to bind (0: any free port).")
@click.option("--slots", default=None, type=click.IntRange(min=1),
              help="Predictions each worker runs at once [default: cog.yaml's "
                   "concurrency.max, else @concurrent(max=N), else 1].")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (sync predictors scale with these).")
@click.option("--max-queue", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Predictions that may wait for a free slot; beyond, 429.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A file holding the bearer token (default: $CORRAL_TOKEN).")
@click.option("--insecure", is_flag=True,
              help="Serve beyond loopback without a token (anyone who reaches the port).")
@click.option("--file-outputs", type=click.Choice(["data", "url"]), default="data",
              show_default=True,
              help="How file outputs come back: data: URLs (Cog's way; files over 8 MiB "
                   "still come as links), or links to GET /files/{id} (kept 10 minutes).")
@click.option("--public-url", default=None, metavar="URL",
              help="Base of /files links (default: the bound address).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Another Host header name to accept (repeatable; '*': any). Default: "
                   "the bound address, and localhost when bound to loopback.")
@click.option("--allowed-origin", "allowed_origins", multiple=True, metavar="ORIGIN",
              help="Another browser Origin to accept, e.g. https://app.example "
                   "(repeatable; '*': any). Default: the server's own only.")
@click.option("--allow-shutdown", is_flag=True,
              help="Let POST /shutdown stop a server without a token (off by default).")
@click.option("--webhook-allow", "webhook_allow", multiple=True, metavar="CIDR",
              envvar="CORRAL_WEBHOOK_ALLOW",
              help="A network webhooks may reach besides public addresses, e.g. "
                   "127.0.0.1/32 (repeatable; default: $CORRAL_WEBHOOK_ALLOW).")
@click.option("--webhook-throttle", type=click.FloatRange(min=0), default=0.5,
              show_default=True, help="Seconds between two output/logs webhook sends.")
@click.option("--fetch-allow", "fetch_allow", multiple=True, metavar="CIDR",
              envvar="CORRAL_FETCH_ALLOW",
              help="A network http(s) URL file inputs may be fetched from besides public "
                   "addresses (repeatable; default: $CORRAL_FETCH_ALLOW).")
@click.option("--no-fetch-inputs", is_flag=True,
              help="Refuse http(s) URL file inputs instead of fetching them.")
@click.option("--max-log-bytes", type=click.IntRange(min=0), default=None,
              help="Log bytes kept per prediction, the oldest dropped first "
                   "[default: $CORRAL_MAX_LOG_BYTES or 1 MiB].")
@click.option("--header-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds a request's headers may take to arrive.")
@click.option("--body-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Seconds a request's body may pause between pieces.")
@click.option("--keep-alive-timeout", type=click.FloatRange(min=0, min_open=True),
              default=5.0, show_default=True,
              help="Seconds an idle keep-alive connection stays open.")
@click.option("--max-connections", type=click.IntRange(min=1), default=1000,
              show_default=True, help="Open connections at most; beyond, 503 and closed.")
@click.option("--no-playground", is_flag=True,
              help="Do not serve the browser playground at / and /playground.")
@click.option("--train", "train", is_flag=True,
              help="Serve cog.yaml's train target (or TARGET as a trainer) under /trainings.")
@click.option("--requirements", "requirements", type=click.Path(exists=True, dir_okay=False),
              default=None, help="A requirements file: the worker runs in an environment "
                                 "built from it (uv, cached), as a plugin's does.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run the workers on the Ray cluster at ADDRESS ('auto': RAY_ADDRESS or "
                   "the local cluster); the HTTP front end stays here (docs/ray.md).")
@click.option("--ray-tag", "ray_tags", multiple=True, metavar="TAG",
              help="With --ray: a tag every worker's node must have (repeat for more).")
@click.option("--ray-cpus", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="With --ray: CPUs each worker asks Ray for.")
@click.option("--ray-gpus", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --ray: GPUs each worker asks Ray for.")
@click.option("--python", "python", default=None, metavar="PATH",
              help="The interpreter the worker runs on (it need not have corral).")
def serve(target: str | None, host: str, port: int, slots: int | None, workers: int,
          max_queue: int, token_file: str | None, insecure: bool, file_outputs: str,
          public_url: str | None, allowed_hosts: tuple[str, ...],
          allowed_origins: tuple[str, ...], allow_shutdown: bool,
          webhook_allow: tuple[str, ...], webhook_throttle: float,
          fetch_allow: tuple[str, ...], no_fetch_inputs: bool, max_log_bytes: int | None,
          header_timeout: float, body_timeout: float, keep_alive_timeout: float,
          max_connections: int, no_playground: bool, train: bool, requirements: str | None,
          ray_address: str | None, ray_tags: tuple[str, ...], ray_cpus: float,
          ray_gpus: float, python: str | None) -> None:
    """Serve TARGET over HTTP with Cog's prediction API until SIGTERM/SIGINT.

    TARGET is file.py:Name, or a Cog project: a cog.yaml or a folder holding one
    (default: the current folder's). From cog.yaml: predict, train, concurrency.max,
    build.python_version, build.python_packages, build.python_requirements and
    environment; the requirements become an environment built once (uv, cached).

    Routes: POST /predictions, PUT /predictions/{id}, GET /health-check,
    GET /openapi.json, POST /shutdown, GET /metrics, GET /files/{id}, /trainings for a
    target with train(), and a browser playground at / and /playground (a form built from
    the schema; --no-playground turns it off). Predictions call the target's predict() (or
    a Cog runner's run()); file inputs come as data: URLs, multipart uploads or http(s)
    URLs the server fetches (public addresses only, unless --fetch-allow). With a
    token every route but /health-check and the playground's static files needs
    "Authorization: Bearer TOKEN".

    \b
    Examples:
      corral serve model.py:Model
      corral serve                       # ./cog.yaml
      corral serve path/to/cog.yaml --train
      corral serve predict.py:Predictor --requirements requirements.txt
      corral serve predict.py:Predictor --python /opt/venv/bin/python
      CORRAL_TOKEN=secret corral serve model.py:Model --host 0.0.0.0
      corral serve model.py:Model --host 0.0.0.0 --token-file /run/secrets/token
      corral serve model.py:Model --webhook-allow 10.0.0.0/8 --allowed-origin https://app.example
      corral serve mypkg.model:Model --ray auto --workers 8 --ray-gpus 1 --ray-tag gpu

    Protections (docs/security.md): Host and Origin headers are checked, webhooks reach
    public addresses only, slow clients are timed out, each prediction keeps at most
    --max-log-bytes of logs.
    """
    token = _read_token(token_file)
    try:
        from .server import serve as run_server
    except ImportError as exc:
        raise Failure(f"serving needs the server extra (pip install 'corral[server]'): "
                      f"{exc}") from None
    _check_binding(host, token, insecure)
    from .server.connections import ConnectionLimits
    from .server.outbound import parse_networks

    for option, nets in (("--webhook-allow", webhook_allow), ("--fetch-allow", fetch_allow)):
        try:
            parse_networks(nets)
        except ValueError as exc:
            raise Failure(f"{option}: {exc}", EXIT_USAGE) from None
    from . import Pool

    on_ray = ray_address is not None
    plan = _serve_plan(target, train, requirements, python, slots, build=not on_ray)
    # SIGTERM ends uvicorn's loop, whose shutdown stops the workers; make sure it does not
    # kill us first when it is delivered before uvicorn installs its handler.
    signal.signal(signal.SIGTERM, _interrupt)
    if on_ray:
        # The workers on the cluster; their environment built on each node they land on.
        try:
            import corral.ray as cray

            placement = cray.on(ray_address, num_cpus=ray_cpus, num_gpus=ray_gpus,
                                tags=list(ray_tags))
        except (ImportError, ValueError) as exc:
            raise Failure(f"--ray: {exc}", EXIT_USAGE) from None
        runner = Pool(plan["target"], workers=workers, slots=plan["slots"],
                      max_queue=max_queue, runner=placement, python=plan["python"],
                      env=plan["env"] or None, cwd=plan["cwd"],
                      requirements=plan["requirements"] or None)
    else:
        runner = Pool(plan["target"], workers=workers, slots=plan["slots"],
                      max_queue=max_queue, python=plan["python"], env=plan["env"] or None,
                      cwd=plan["cwd"])
    try:
        run_server(runner, host=host, port=port, token=token, insecure=insecure,
                   file_outputs=file_outputs, public_url=public_url,
                   allowed_hosts=allowed_hosts or None, allowed_origins=allowed_origins,
                   allow_shutdown=allow_shutdown, webhook_allow=webhook_allow,
                   webhook_throttle=webhook_throttle, max_log_bytes=max_log_bytes,
                   fetch_inputs=not no_fetch_inputs, fetch_allow=fetch_allow,
                   limits=ConnectionLimits(header_timeout, body_timeout, keep_alive_timeout,
                                           max_connections),
                   playground=not no_playground, train_mode=train)
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()  # idempotent; the app has stopped it unless it never started


def _serve_plan(target: str | None, train: bool, requirements: str | None,
                python: str | None, slots: int | None, build: bool = True) -> dict[str, Any]:
    """What `corral serve` runs: the reference, its interpreter and environment variables,
    its slots and folder, from TARGET, a cog.yaml and the options. ``build``: build the
    requirements' environment here (else they are returned, for Ray's nodes to build)."""
    from .cog.project import CogConfigError, CogProject, concurrent_max
    from .plugins.errors import EnvironmentBuildError, RequirementsError
    from .plugins.requirements import read_requirements

    try:
        project = CogProject.find(target or ".")
    except CogConfigError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    env: dict[str, str] = {}
    cwd = None
    reqs: list[str] = []
    try:
        if project is not None:
            for line in project.unsupported:
                click.echo(f"corral: cog.yaml: {line}", err=True)
            ref = project.target(train)
            reqs = project.requirements()
            env.update(project.environment)
            cwd = project.root
            if python is None and project.python_version is not None:
                python = project.python()
                if python is None:
                    click.echo(f"corral: cog.yaml asks for Python {project.python_version}, "
                               f"which is not on PATH: using {sys.executable} (give "
                               "--python PATH)", err=True)
            if slots is None:
                slots = project.concurrency
        elif target is None:
            raise Failure("no TARGET given and no cog.yaml here", EXIT_USAGE)
        else:
            ref = target
        if requirements is not None:
            reqs += read_requirements(requirements)
    except (CogConfigError, RequirementsError) as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    if slots is None:
        slots = concurrent_max(ref) or 1
    if not build:
        return {"target": ref, "python": python, "env": env, "slots": slots, "cwd": cwd,
                "requirements": reqs}
    try:
        if reqs:
            from .plugins.envs import EnvironmentCache

            def progress(line: str) -> None:
                click.echo(f"corral: {line}", err=True)

            built = EnvironmentCache(python=python).ensure(reqs, progress=progress)
            python = built.python
            env = {**built.worker_env, **env}
        elif python is not None:
            from .plugins.overlay import runtime_overlay

            env = {**runtime_overlay(python), **env}
    except (EnvironmentBuildError, FileNotFoundError) as exc:
        raise Failure(f"cannot prepare the worker's environment: {exc}") from None
    return {"target": ref, "python": python, "env": env, "slots": slots, "cwd": cwd,
            "requirements": []}


def _read_token(token_file: str | None) -> str | None:
    if token_file is None:
        return os.environ.get("CORRAL_TOKEN") or None
    with open(token_file, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise Failure(f"the token file {token_file} is empty", EXIT_USAGE)
    return token


def _check_binding(host: str, token: str | None, insecure: bool) -> None:
    """Refuse (a usage error) to serve beyond loopback without a token, unless insecure."""
    from .server.auth import check_binding

    try:
        check_binding(host, token, insecure)
    except ValueError as exc:
        raise Failure(f"{exc} (--token-file, CORRAL_TOKEN or --insecure)", EXIT_USAGE) \
            from None


class _Size(click.ParamType):
    name = "SIZE"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        from .plugins.manifest import parse_size

        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@cli.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Beyond loopback a token is required (or --insecure).")
@click.option("--port", default=7070, show_default=True, type=click.IntRange(0, 65535),
              help="Port to bind (0: any free port).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A file holding the bearer token (default: $CORRAL_TOKEN).")
@click.option("--insecure", is_flag=True,
              help="Serve beyond loopback without a token (anyone who reaches the port).")
@click.option("--store", default=None, metavar="DIR",
              help="Where programs are kept (default: $CORRAL_HOME/host or "
                   "~/.cache/corral/host); they survive a restart.")
@click.option("--max-upload", type=_Size(), default="1GiB", show_default=True,
              help="Largest bundle, in all.")
@click.option("--max-chunk", type=_Size(), default="8MiB", show_default=True,
              help="Largest upload chunk.")
@click.option("--max-frame", type=_Size(), default="512MiB", show_default=True,
              help="Largest WebSocket message (one array or bytes value).")
@click.option("--max-instances", default=16, show_default=True, type=click.IntRange(min=1),
              help="Instances one client identity may have at once.")
@click.option("--max-connections", default=64, show_default=True,
              type=click.IntRange(min=1), help="Sessions at once.")
@click.option("--idle-timeout", default=300.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds a session with no instance and nothing in flight may send nothing.")
@click.option("--send-timeout", default=30.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds a client may take no frame before it is dropped as slow.")
@click.option("--linger", default=3600.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds a detached instance lives with no client attached (0: until "
                   "stopped).")
@click.option("--tag", "tags", multiple=True, metavar="T",
              help="A tag this machine advertises in capabilities() (repeatable).")
@click.option("--allowed-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Another Host name the server answers (repeatable; '*': any).")
@click.option("--allowed-origin", "allow_origins", multiple=True, metavar="ORIGIN",
              help="A browser Origin allowed to open sessions (repeatable; '*': any).")
def host(host: str, port: int, token_file: str | None, insecure: bool, store: str | None,
         max_upload: int, max_chunk: int, max_frame: int, max_instances: int,
         max_connections: int, idle_timeout: float, send_timeout: float, linger: float,
         tags: tuple[str, ...], allow_hosts: tuple[str, ...],
         allow_origins: tuple[str, ...]) -> None:
    """Run a session server: clients connect (corral.connect), upload programs, launch
    instances (Workers, Pools) and call them over one WebSocket (/v1/corral).

    Routes: WebSocket /v1/corral, WebSocket /v1/ws (PIE's protocol: pie-client works
    unchanged, the token as "user:TOKEN" in its identity), GET /health, GET /metrics. With a
    token everything but /health needs "Authorization: Bearer TOKEN" (PIE: in the identity).
    SIGTERM drains, then stops every instance.

    \b
    Examples:
      corral host
      CORRAL_TOKEN=secret corral host --host 0.0.0.0 --port 7070 --tag gpu
      corral host --host 0.0.0.0 --token-file /run/secrets/token --store /srv/corral
    """
    token = _read_token(token_file)
    try:
        from .remote.server import serve_host
        from .remote.state import HostLimits
    except ImportError as exc:
        raise Failure(f"corral host needs the server and remote extras (pip install "
                      f"'corral[server,remote]'): {exc}") from None
    _check_binding(host, token, insecure)
    limits = HostLimits(max_upload=max_upload, max_chunk=max_chunk, max_frame=max_frame,
                        max_instances=max_instances, max_connections=max_connections,
                        idle_timeout=idle_timeout, send_timeout=send_timeout, linger=linger)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        serve_host(host=host, port=port, token=token, insecure=insecure, store=store,
                   limits=limits, tags=tags, allowed_hosts=allow_hosts,
                   allowed_origins=allow_origins)
    except KeyboardInterrupt:
        pass


# -- plugins -------------------------------------------------------------------------------


def _plugin_options(fn: Any) -> Any:
    fn = click.option("--no-entry-points", is_flag=True,
                      help="Do not look for plugins in installed distributions.")(fn)
    fn = click.option("--plugins-dir", type=click.Path(file_okay=False), default=None,
                      help="The folder of plugin folders (default: $CORRAL_PLUGINS_DIR, "
                           "else ~/.local/share/corral/plugins).")(fn)
    fn = click.option("-p", "--path", "paths", multiple=True, type=click.Path(),
                      help="A plugin folder, or a folder of plugin folders, searched "
                           "first (repeat for more).")(fn)
    return fn


def _manager(paths: tuple[str, ...], plugins_dir: str | None, no_entry_points: bool) -> Any:
    from .plugins.manager import PluginManager

    return PluginManager(list(paths), plugins_dir=plugins_dir,
                         entry_points=not no_entry_points)


def _warn_problems(manager: Any) -> None:
    for problem in manager.problems():
        click.echo(f"warning: {problem}", err=True)


def _plugin_failure(exc: BaseException) -> Failure:
    """A plugin-layer error as a message and exit status (2: the user named or configured
    something wrong; 1: it failed)."""
    from .plugins.errors import ConfigError, PluginNotFound

    if isinstance(exc, ConfigError):
        return Failure(_config_problems(exc.plugin, exc.problems), EXIT_USAGE)
    if isinstance(exc, PluginNotFound):
        return Failure(str(exc), EXIT_USAGE)
    return Failure(str(exc))


def _config_problems(plugin: str, problems: list[dict[str, Any]]) -> str:
    return format_problems("", problems).replace("invalid inputs for :",
                                                 f"bad config for plugin {plugin}:")


@cli.group(context_settings={"help_option_names": ["-h", "--help"]})
def plugins() -> None:
    """Find, install and call plugins: folders or distributions with a corral.toml.

    \b
    Examples:
      corral plugins list -p ./my-plugins
      corral plugins install sentiment
      corral plugins call sentiment predict -i text="great"
      corral plugins uninstall sentiment
    """


def _size(n: int | None) -> str:
    from .plugins.manifest import format_size

    return "" if n is None else format_size(n)


@plugins.command("list", context_settings={"help_option_names": ["-h", "--help"]})
@_plugin_options
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def plugins_list(paths: tuple[str, ...], plugins_dir: str | None, no_entry_points: bool,
                 as_json: bool) -> None:
    """List the plugins found: name, version, environment, resources.

    The environment is none (no requirements: runs on corral's own interpreter),
    missing, building, ready or failed. Problems with manifests go to stderr.
    """
    import msgspec

    manager = _manager(paths, plugins_dir, no_entry_points)
    rows = manager.list()
    _warn_problems(manager)
    if as_json:
        click.echo(msgspec.json.encode(rows).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "version", "environment", "memory", "gpus", "gpu memory",
                  "source", box=None, header_style="bold")
    for row in rows:
        res = row.resources
        table.add_row(row.name, row.version, row.environment + (f" ({row.detail})"
                                                                 if row.detail else ""),
                      _size(res.memory) if res.memory else "-", str(res.gpus or "-"),
                      _size(res.gpu_memory) if res.gpu_memory else "-", row.source)
    console = Console(highlight=False, soft_wrap=True)
    if rows:
        console.print(table)
    else:
        click.echo("no plugins found", err=True)


@plugins.command("install", context_settings={"help_option_names": ["-h", "--help"]})
@_plugin_options
@click.argument("name")
def plugins_install(paths: tuple[str, ...], plugins_dir: str | None, no_entry_points: bool,
                    name: str) -> None:
    """Build plugin NAME's environment now (it is also built on first use).

    Shows the builder's progress as it goes; a failed build prints the installer's own
    message and exits 1, leaving nothing half-built.
    """
    from rich.console import Console

    from .plugins.errors import PluginError

    manager = _manager(paths, plugins_dir, no_entry_points)
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        with console.status(f"installing {name}") as status:
            def progress(line: str) -> None:
                line = line.rstrip("\n")
                status.update(f"installing {name}: {line}")
                console.print(line, markup=False, style="dim")

            env = manager.install(name, progress=progress)
    except PluginError as exc:
        raise _plugin_failure(exc) from None
    if env is None:
        click.echo(f"{name} has no requirements: it runs on corral's own interpreter, "
                   "nothing to install")
    else:
        click.echo(f"{name}: environment ready at {env.path}")


@plugins.command("uninstall", context_settings={"help_option_names": ["-h", "--help"]})
@_plugin_options
@click.argument("name")
def plugins_uninstall(paths: tuple[str, ...], plugins_dir: str | None,
                      no_entry_points: bool, name: str) -> None:
    """Remove plugin NAME's environment, unless another plugin uses the same one.

    The plugin itself (its folder or distribution) stays where it is.
    """
    from .plugins.errors import PluginError

    manager = _manager(paths, plugins_dir, no_entry_points)
    try:
        removed = manager.uninstall(name)
    except PluginError as exc:
        raise _plugin_failure(exc) from None
    click.echo(f"{name}: environment removed" if removed else
               f"{name}: no environment of its own to remove")


@plugins.command("call", context_settings={"help_option_names": ["-h", "--help"]})
@_plugin_options
@click.argument("name")
@click.argument("method", default="predict")
@click.option("-i", "--input", "inputs", multiple=True, metavar="KEY=VALUE",
              help="An input of the method, as for `corral predict` (repeat for each).")
@click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
              help="A setup() config value (repeat for each); checked against setup()'s "
                   "type hints, JSON for lists and objects.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop the call after this long (exit 1).")
def plugins_call(paths: tuple[str, ...], plugins_dir: str | None, no_entry_points: bool,
                 name: str, method: str, inputs: tuple[str, ...], config: tuple[str, ...],
                 as_json: bool, timeout: float | None) -> None:
    """Load plugin NAME, call its METHOD (default: predict) once, print the output.

    Inputs are parsed as `corral predict` parses them. The environment is built first if
    needed; the plugin is unloaded when the call ends.

    \b
    Examples:
      corral plugins call echo echo -i x=hello -p ./plugins
      corral plugins call sentiment -c model=small -i text="great"

    Exit status: 0 done, 1 the call or the plugin failed, 2 bad inputs, config or usage.
    """
    from .exceptions import SetupError
    from .plugins.errors import PluginError

    settings, problems = parse_inputs(config, None)
    for key, value in settings.items():
        if isinstance(value, str) and value[:1] in "[{":
            try:
                settings[key] = json.loads(value)
            except ValueError:
                pass
    if problems:
        raise Failure(_config_problems(name, problems), EXIT_USAGE)
    manager = _manager(paths, plugins_dir, no_entry_points)
    try:
        try:
            handle = manager.load(name, settings)
        except PluginError as exc:
            raise _plugin_failure(exc) from None
        except SetupError as exc:
            raise Failure(f"the plugin's setup failed: {exc}") from None
        _run_method(handle.worker, name, method, inputs, as_json, timeout)
    finally:
        manager.close()


# -- ray -----------------------------------------------------------------------------------


@cli.group("ray", context_settings={"help_option_names": ["-h", "--help"]})
def ray_group() -> None:
    """Look at the Ray cluster corral runs on (docs/ray.md).

    \b
    Examples:
      corral ray nodes --address auto
      corral serve model.py:Model --ray auto --workers 4 --ray-tag gpu
    """


@ray_group.command("nodes", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--address", default=None, metavar="ADDRESS",
              help="The cluster's address (default: RAY_ADDRESS, else the local cluster).")
@click.option("--json", "as_json", is_flag=True, help="Print the nodes as JSON.")
def ray_nodes(address: str | None, as_json: bool) -> None:
    """Every node of the cluster: CPUs, memory, GPUs, tags, Python, corral environments
    and live load (load average, memory in use, this process's calls)."""
    try:
        import corral.ray as cray

        found = cray.nodes(address)
    except ImportError as exc:
        raise Failure(f"Ray workers need the ray extra (pip install 'corral[ray]'): {exc}") \
            from None
    except ConnectionError as exc:
        raise Failure(f"cannot reach the Ray cluster: {exc}") from None
    if as_json:
        import msgspec

        click.echo(_as_json(msgspec.to_builtins(found), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("node", "address", "alive", "cpus free/total", "memory free/total",
                  "gpus", "tags", "python", "envs", "load", "mem used", "calls/queued",
                  box=None, header_style="bold")
    for n in found:
        gpus = ", ".join(f"{g.name} {_gib(g.memory)}" for g in n.gpu_devices) or \
            (f"{n.gpus_free:g}/{n.gpus:g}" if n.gpus else "-")
        table.add_row(n.node_id[:12], n.address, "yes" if n.alive else "no",
                      f"{n.cpus_free:g}/{n.cpus:g}",
                      f"{_gib(n.memory_free)}/{_gib(n.memory)}", gpus,
                      ", ".join(n.tags) or "-", n.python or "-", str(len(n.environments)),
                      "-" if n.load is None else f"{n.load:.2f}",
                      "-" if n.memory_used is None else _gib(n.memory_used),
                      f"{n.active_calls}/{n.queued}")
    # (a pipe gets every column whole: no terminal width to fit)
    Console(highlight=False, width=None if sys.stdout.isatty() else 250).print(table)


def _gib(nbytes: int | float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point."""
    cli.main(args=argv, prog_name="corral")


if __name__ == "__main__":
    main()
