"""What a built Cog target needs in the worker (called by worker/loader.py once cog has
been imported by the target, directly or not).

* **Which method.** A class that defines ``run()`` (Cog's current name) serves it as
  ``predict`` too, and one that defines ``predict()`` serves it as ``run``; the bridges
  BaseRunner itself defines (its ``run``/``predict``, ``record_metric``) are not methods.
* **Outputs made plain** before they cross: a cog.Path (or any path) as a plain
  ``pathlib.Path`` (the server turns it into a data: URL or a /files link), a file object
  (a cog.File output) saved to a temporary file, a BaseModel (a dataclass) or a pydantic
  model as a dict, a Secret as its value, an Enum as its value; inside lists, dicts and
  BaseModel fields too.
* **current_scope()**: ``cog.current_scope()`` and ``BaseRunner.scope`` ask coglet's
  native module, which knows nothing of corral's calls; its ``current_scope`` is replaced
  by one backed by ``corral.current()``: the request's ``context``, ``record_metric`` and
  ``scope.metrics[...]`` (Cog's ``incr`` mode is corral's ``increment``; None deletes).
* **Cancellation**: a cancelled call raises an exception that is both corral's
  CallCancelled and Cog's ``CancelationException``, so ``except CancelationException``
  in the predictor sees it (an async one gets asyncio's CancelledError, as under coglet).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import io
import os
import pathlib
import sys
import tempfile
from typing import Any

_BRIDGES = ("run", "predict", "record_metric")


def adapt(loaded: Any, obj: Any) -> None:
    """Make ``loaded`` (worker/loader.py's Loaded) serve a Cog target; ``obj`` is what the
    reference named (a class, instance or function)."""
    install_scope()
    install_cancel()
    methods = loaded.methods
    cls = obj if isinstance(obj, type) else (None if inspect.isfunction(obj) else type(obj))
    if cls is not None:
        for name in _BRIDGES:  # BaseRunner's own bridges are not the model's methods
            if name in methods and _owner(cls, name) is None:
                del methods[name]
        if "run" in methods and "predict" not in methods:
            methods["predict"] = methods["run"]
        elif "predict" in methods and "run" not in methods:
            methods["run"] = methods["predict"]
    from ..worker.inputs import Inputs

    seen: dict[int, Any] = {}
    for name, method in methods.items():
        if id(method) in seen:
            continue
        seen[id(method)] = method
        try:
            method._inputs = Inputs(method.fn, cog=True)
        except Exception:  # noqa: BLE001 - a signature Cog's reading cannot take: the
            pass  # method is still served (read the plain way); never a failed setup
        method.fn = _plain_outputs(method.fn, method.info.kind)


def _owner(cls: type, name: str) -> type | None:
    """The class of the user's that defines ``name`` (Cog's own classes do not count)."""
    for owner in inspect.getmro(cls):
        if owner is object or owner.__module__.split(".")[0] == "cog":
            continue
        if callable(owner.__dict__.get(name)):
            return owner
    return None


def _plain_outputs(fn: Any, kind: str) -> Any:
    if kind == "generator":
        @functools.wraps(fn)
        def gen(*args: Any, **kwargs: Any) -> Any:
            for item in fn(*args, **kwargs):
                yield plain(item)
        return gen
    if kind == "asyncgen":
        @functools.wraps(fn)
        async def agen(*args: Any, **kwargs: Any) -> Any:
            async for item in fn(*args, **kwargs):
                yield plain(item)
        return agen
    if kind == "async":
        @functools.wraps(fn)
        async def coro(*args: Any, **kwargs: Any) -> Any:
            return plain(await fn(*args, **kwargs))
        return coro

    @functools.wraps(fn)
    def sync(*args: Any, **kwargs: Any) -> Any:
        return plain(fn(*args, **kwargs))
    return sync


def plain(value: Any) -> Any:
    """``value`` with Cog's output types replaced by what corral sends (see above)."""
    if value is None or type(value) in (str, int, float, bool, bytes):
        return value
    if isinstance(value, pathlib.PurePath):
        return pathlib.Path(os.fspath(value))
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    t = type(value)
    if t.__module__ == "cog.types" and t.__name__ == "Secret":
        return value.get_secret_value()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(t, "model_dump") and hasattr(t, "model_fields"):  # a pydantic model
        return plain(value.model_dump())
    if isinstance(value, io.IOBase):
        return _save(value)
    return value


def _save(fileobj: Any) -> pathlib.Path:
    name = os.path.basename(str(getattr(fileobj, "name", "") or "")) or "output"
    suffix = os.path.splitext(name)[1]
    with tempfile.NamedTemporaryFile("wb", suffix=suffix, prefix="corral-cog-",
                                     delete=False) as out:
        if hasattr(fileobj, "seek") and fileobj.seekable():
            fileobj.seek(0)
        while True:
            chunk = fileobj.read(1 << 20)
            if not chunk:
                break
            out.write(chunk.encode() if isinstance(chunk, str) else chunk)
    return pathlib.Path(out.name)


def setup_config(setup: Any) -> dict[str, Any]:
    """Cog's call of ``setup()``: ``weights`` from ``$COG_WEIGHTS`` when it takes one."""
    weights = os.environ.get("COG_WEIGHTS")
    if not weights:
        return {}
    try:
        takes = "weights" in inspect.signature(setup).parameters
    except (TypeError, ValueError):
        return {}
    return {"weights": weights} if takes else {}


# -- current_scope() -------------------------------------------------------------------------

_MODES = {None: "replace", "replace": "replace", "incr": "increment",
          "increment": "increment", "append": "append"}


class MetricRecorder:
    """``scope.metrics``: Cog's metric API over corral's ``Scope.metric``."""

    __slots__ = ("_scope",)

    def __init__(self, scope: Any):
        self._scope = scope

    def record(self, key: str, value: Any, mode: str | None = None) -> None:
        if mode not in _MODES:
            raise ValueError(f"metric mode must be replace, incr or append, not {mode!r}")
        if self._scope is not None:
            self._scope.metric(key, value, "replace" if value is None else _MODES[mode])

    def delete(self, key: str) -> None:
        self.record(key, None)

    def __setitem__(self, key: str, value: Any) -> None:
        self.record(key, value)

    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def __repr__(self) -> str:
        return "<MetricRecorder>"


class CogScope:
    """What ``cog.current_scope()`` returns inside a corral worker (outside a call: a
    scope that ignores everything, as Cog's)."""

    __slots__ = ("_scope",)

    def __init__(self, scope: Any):
        self._scope = scope

    @property
    def context(self) -> dict[str, Any]:
        return dict(self._scope.context) if self._scope is not None else {}

    @property
    def metrics(self) -> MetricRecorder:
        return MetricRecorder(self._scope)

    def record_metric(self, key: str, value: Any, mode: str | None = None) -> None:
        self.metrics.record(key, value, mode)

    def __repr__(self) -> str:
        return f"<cog Scope via {self._scope!r}>"


def current_scope() -> CogScope:
    from ..worker.scope import _current

    return CogScope(_current.get())


def install_scope() -> None:
    coglet = sys.modules.get("coglet")
    if coglet is None:
        try:
            import coglet  # cog's SDK imports it; present wherever cog is
        except ImportError:
            coglet = None
    sdk = getattr(coglet, "_sdk", None)
    if sdk is not None:
        sdk.current_scope = current_scope  # what cog.current_scope and BaseRunner.scope ask
    cog = sys.modules.get("cog")
    if cog is not None:
        cog.current_scope = current_scope  # older SDKs bind their own


def install_cancel() -> None:
    from ..worker import cancel

    coglet = sys.modules.get("coglet")
    base = getattr(coglet, "CancelationException", None) or getattr(
        sys.modules.get("cog"), "CancelationException", None)
    if base is None or issubclass(cancel.RAISED, base):
        return
    cancel.RAISED = type("CogCallCancelled", (cancel.CallCancelled, base),
                         {"__module__": "corral.cog.runtime"})
