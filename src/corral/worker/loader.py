"""Find the target, build it once, run ``setup(**config)``, and list its callable methods."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Callable

from ..exceptions import problems_text
from ..protocol.messages import MethodInfo, TargetSpec
from . import introspect

#: Lifecycle hooks: run by corral, never callable as methods.
LIFECYCLE = frozenset({"setup", "teardown"})


class TargetError(Exception):
    """The target reference is malformed or names nothing loadable."""


class Method:
    """A callable method with what the hot path needs precomputed."""

    __slots__ = ("fn", "info", "is_async", "streams", "_inputs")

    def __init__(self, fn: Callable[..., Any], info: MethodInfo):
        self.fn = fn
        self.info = info
        self.is_async = info.kind in ("async", "asyncgen")
        self.streams = info.streams
        self._inputs: Any = None

    @property
    def inputs(self) -> Any:
        """What the method accepts (worker/inputs.py), built on first use."""
        if self._inputs is None:
            from .inputs import Inputs

            self._inputs = Inputs(self.fn)
        return self._inputs

    def schema(self) -> Any:
        from ..protocol.messages import MethodSchema

        inputs = self.inputs
        return MethodSchema(inputs.schema(), inputs.output_schema(self.streams))


class Loaded:
    """A built target: the object, its methods, and a readable name for messages."""

    __slots__ = ("obj", "name", "methods")

    def __init__(self, obj: Any, name: str, methods: dict[str, Method]):
        self.obj = obj
        self.name = name
        self.methods = methods

    def teardown(self) -> None:
        hook = getattr(self.obj, "teardown", None) if not introspect.isfunction(self.obj) else None
        if callable(hook):
            hook()


def resolve(spec: TargetSpec, allow_pickle: bool) -> Any:
    """The class, instance or function the spec names (not built yet)."""
    if spec.pickled is not None:
        # The host shipped a local object; cloudpickle's output needs cloudpickle to load
        # when it contains functions or classes defined by value.
        import pickle  # here, not at the top: most workers load a reference (cold start)

        try:
            return pickle.loads(spec.pickled)
        except ModuleNotFoundError as exc:
            raise TargetError(
                f"cannot unpickle the shipped target: {exc}. A local class, instance or "
                "function needs cloudpickle (and its modules) in the worker's environment"
            ) from exc
    if not spec.ref:
        raise TargetError("the target spec names neither a reference nor a pickled object")
    return resolve_ref(spec.ref)


def resolve_ref(ref: str) -> Any:
    """Resolve ``path/to/file.py:Name`` or ``package.module:Name`` (``Name`` may be dotted)."""
    module_part, sep, attr = ref.rpartition(":")
    if not sep or not module_part or not attr:
        raise TargetError(
            f"target reference {ref!r} must look like 'path/to/file.py:Name' or 'package.module:Name'"
        )
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        module = _load_file(module_part)
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            if exc.name and module_part.startswith(exc.name):
                raise TargetError(f"no module named {module_part!r} (from target {ref!r})") from exc
            raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{module_part!r} has no attribute {attr!r} (from target {ref!r})") from None
    return obj


def _load_file(path: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise TargetError(f"target file {path!r} does not exist")
    name = "corral_target_" + os.path.splitext(os.path.basename(full))[0]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Siblings of the file import as they would when running it directly.
    sys.path.insert(0, os.path.dirname(full))
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class ConfigProblems(TypeError):
    """A config that does not fit ``setup()``: ``problems`` lists each, as
    ``{"loc": [...], "msg": ...}``."""

    def __init__(self, problems: list[dict[str, Any]]):
        self.problems = problems
        super().__init__(problems_text(problems, "(config)"))


def check_config(obj: Any, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` checked against the ``setup()`` type hints of ``obj`` (a class, an
    instance or a function) and converted as call inputs are (worker/inputs.py), before
    anything is built; raise ConfigProblems listing every unknown key, missing required
    value and value of the wrong type."""
    if isinstance(obj, type):
        setup = introspect.getattr_static(obj, "setup", None)
        unbound = introspect.isfunction(setup)
        setup = getattr(obj, "setup", None)
    else:
        setup = None if introspect.isfunction(obj) else getattr(obj, "setup", None)
        unbound = False
    if not callable(setup):
        if config:
            raise ConfigProblems([{"loc": [key], "msg": "unexpected config key (the target "
                                   "has no setup() to receive it)"} for key in config])
        return {}
    from .inputs import InputError, Inputs  # here: a target without setup() never needs it

    try:
        return Inputs(setup, unbound=unbound).convert(config)
    except InputError as exc:
        raise ConfigProblems([{**p, "msg": p["msg"].replace("input", "config key")
                               if p["msg"] in ("unexpected input", "required input is missing")
                               else p["msg"]} for p in exc.problems]) from None


def build(obj: Any, config: dict[str, Any], run_async: Callable[[Any], Any]) -> Loaded:
    """Build the target once and run its ``setup(**config)``; ``run_async`` runs a coroutine
    (an async ``setup``) to completion on the worker's event loop."""
    if introspect.isfunction(obj) or introspect.isbuiltin(obj):
        if config:
            raise TypeError(
                f"config {sorted(config)} given, but the function target {obj.__name__!r} "
                "has no setup() to receive it"
            )
        methods = {obj.__name__: _method(obj, obj.__name__)}
        if obj.__name__ != "predict":
            methods["predict"] = methods[obj.__name__]
        return _cog_hook(Loaded(obj, _describe(obj), methods), obj)
    if isinstance(obj, type):
        instance = obj()
    else:
        instance = obj
    setup = getattr(instance, "setup", None)
    if callable(setup):
        if not config and "cog" in sys.modules:  # -- Cog SDK hook: setup(weights=...)
            from ..cog.runtime import setup_config

            config = setup_config(setup)
        result = setup(**config)
        if result is not None:
            import inspect

            if inspect.isawaitable(result):
                run_async(result)
    elif config:
        raise TypeError(
            f"config {sorted(config)} given, but {_describe(instance)} has no setup() to receive it"
        )
    return _cog_hook(Loaded(instance, _describe(obj), public_methods(instance)), obj)


def _cog_hook(loaded: Loaded, obj: Any) -> Loaded:
    """-- Cog SDK hook: a target that imported cog is served the Cog way
    (corral/cog/runtime.py); without cog nothing is imported."""
    if "cog" in sys.modules:
        from ..cog.runtime import adapt

        adapt(loaded, obj)
    elif "predict" not in loaded.methods and "run" in loaded.methods:
        loaded.methods["predict"] = loaded.methods["run"]  # Cog's newer name, without cog
    return loaded


def public_methods(instance: Any) -> dict[str, Method]:
    """Every public method of ``instance``: names not starting with ``_``, minus lifecycle
    hooks; properties and plain attributes are skipped without being evaluated."""
    methods = {}
    for name in dir(type(instance)):
        if name.startswith("_") or name in LIFECYCLE:
            continue
        raw = introspect.getattr_static(instance, name, None)
        if not isinstance(raw, (staticmethod, classmethod)) and not introspect.isfunction(raw) \
                and not introspect.isbuiltin(raw) and not introspect.ismethoddescriptor(raw):
            continue
        fn = getattr(instance, name)
        if callable(fn):
            methods[name] = _method(fn, name)
    return methods


def _method(fn: Callable[..., Any], name: str) -> Method:
    info = MethodInfo(introspect.kind(fn), introspect.signature_text(fn),
                      introspect.doc_summary(fn))
    return Method(fn, info)


def _describe(obj: Any) -> str:
    if isinstance(obj, type) or introspect.isfunction(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__module__}.{type(obj).__qualname__} instance"
