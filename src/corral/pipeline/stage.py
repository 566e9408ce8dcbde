"""One stage of a pipeline: what it is given as, how it is built, how it is run.

A stage is given as an object, a class (built with no arguments), ``(class, config)``
(built as ``cls(**config)``), a reference ``"file.py:Name"`` / ``"pkg.mod:Name"`` (to a
class or an object; with a config as ``(reference, config)``), or a ``Stage``. It is
built in the worker, once, when the pipeline's ``setup()`` runs.

What a stage can do is read from what it has, in this order:

* forward: a torch module is called (``module(x)``, hooks included); else its
  ``forward(x)``; else ``transform(x)``; else the object itself if callable;
* fit (trainable): ``fit(x, y)``; batched: ``partial_fit(x, y)``.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable


class Stage:
    """A stage to build: ``target`` (an object, a class or a reference), the ``config``
    a class is built with, and its ``name`` in states and errors (default: the class
    name in snake_case, numbered when repeated)."""

    def __init__(self, target: Any, config: dict[str, Any] | None = None,
                 name: str | None = None):
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"a stage's config must be a dict, not {type(config).__name__}")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"a stage's name must be a non-empty str, not {name!r}")
        self.target = target
        self.config = dict(config or {})
        self.name = name

    @classmethod
    def of(cls, spec: Any, where: str) -> "Stage":
        """A ``Stage`` for any of the accepted spellings (``where`` names it in errors)."""
        if isinstance(spec, Stage):
            return spec
        if isinstance(spec, tuple):
            if len(spec) != 2 or not isinstance(spec[1], dict):
                raise TypeError(f"{where}: a tuple stage is (class or reference, config "
                                f"dict), not {spec!r}")
            return cls(spec[0], spec[1])
        if isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], str) \
                and isinstance(spec[1], dict):
            return cls(spec[0], spec[1])  # (a reference and its config, as a config value)
        return cls(spec)

    def build(self, where: str) -> tuple[Any, str]:
        """The stage object (built in the worker) and its name: given, else that of the
        class (or reference) it was built from, in snake_case."""
        target = self.target
        if isinstance(target, str):
            from ..worker.loader import resolve_ref

            target = resolve_ref(target)
        cls = target if isinstance(target, type) else type(target)
        name = self.name or re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls.__name__).lower()
        if isinstance(target, type):
            return target(**self.config), name
        if self.config:
            raise TypeError(f"{where}: a config {sorted(self.config)} was given for an "
                            f"object ({type(target).__name__}); give its class instead")
        return target, name


def is_torch_module(obj: Any) -> bool:
    """A torch ``nn.Module`` (checked only when torch is already imported: a stage that
    is one imported it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def forward_of(stage: Any, name: str) -> Callable[[Any], Any]:
    if is_torch_module(stage):
        from .torchstage import forward_module

        return forward_module(stage)
    for attr in ("forward", "transform"):
        fn = getattr(stage, attr, None)
        if callable(fn):
            return fn
    if callable(stage):
        return stage
    raise TypeError(f"stage {name!r} ({type(stage).__name__}) has no forward(x), "
                    "transform(x) or __call__(x): it cannot be run")


def fit_of(stage: Any) -> Callable[..., Any] | None:
    fn = getattr(stage, "fit", None)
    return fn if callable(fn) and not is_torch_module(stage) else None


def partial_fit_of(stage: Any) -> Callable[..., Any] | None:
    fn = getattr(stage, "partial_fit", None)
    return fn if callable(fn) else None
