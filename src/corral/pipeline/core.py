"""``Pipeline``: a Worker target hosting a chain of stages (see the package docstring).

Every stage runs in the worker's process: ``forward`` is one call whatever the number of
stages, and the intermediate values never leave the worker. A stage that raises fails
the call with ``StageError`` naming the stage, its place and the phase (its own error is
the cause).
"""

from __future__ import annotations

import math
from typing import Any

from .stage import Stage, fit_of, forward_of, is_torch_module, partial_fit_of
from .state import get_state, set_state


class StageError(RuntimeError):
    """A stage of a pipeline raised: ``stage`` (its name), ``index`` (0-based) and
    ``phase`` (forward, fit, partial_fit, loss...) say where; the stage's error is the
    ``__cause__``."""

    def __init__(self, message: str, stage: str = "", index: int = -1, phase: str = ""):
        self.stage = stage
        self.index = index
        self.phase = phase
        super().__init__(message)


class Pipeline:
    """A chain of stages in one worker: ``corral.Worker(corral.Pipeline([...]))``.

    ``stages``: objects, classes, ``(class, config)`` pairs, references
    (``"file.py:Name"``, ``"pkg.mod:Name"``, or ``(reference, config)``) or ``Stage``s;
    see ``corral.pipeline.stage``. They are built once, in the worker, when the worker
    starts (``setup()``); the same works as ``Worker("corral.pipeline:Pipeline",
    config={"stages": [...references...]})``. ``loss`` (``"mse"``, ``"cross_entropy"``,
    ``"l1"`` or a callable) and ``lr`` are for torch stages: the gradient steps of
    ``fit_batches``, ``get_gradients``, ``apply_gradients``.

    It also runs in-process, without a worker (the stages are built on first use).
    """

    def __init__(self, stages: Any = (), *, loss: Any = "mse", lr: float = 0.01):
        self._specs = [Stage.of(s, f"stage {i}") for i, s in enumerate(stages)]
        self._loss = loss
        self._lr = lr
        self._stages: list[Any] | None = None
        self._names: list[str] = []

    def setup(self, stages: Any = None, loss: Any = None, lr: float | None = None) -> None:
        """Build the stages (the worker runs this once, before any call)."""
        if stages is not None:
            self._specs = [Stage.of(s, f"stage {i}") for i, s in enumerate(stages)]
        if loss is not None:
            self._loss = loss
        if lr is not None:
            self._lr = lr
        self._build()

    def _build(self) -> list[Any]:
        if self._stages is not None:
            return self._stages
        if not self._specs:
            raise ValueError("a Pipeline needs at least one stage")
        built, names = [], []
        for i, spec in enumerate(self._specs):
            where = f"stage {i}" + (f" ({spec.name!r})" if spec.name else "")
            obj, name = spec.build(where)
            if name in names:
                name = f"{name}_{i}"
            built.append(obj)
            names.append(name)
        self._stages, self._names = built, names
        self._forwards = [forward_of(s, n) for s, n in zip(built, names)]
        self._torch = [(n, s) for n, s in zip(names, built) if is_torch_module(s)]
        return built

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to the worker as specs: stages are built there, not pickled built.
        state = dict(self.__dict__)
        for key in ("_stages", "_forwards", "_torch"):
            state.pop(key, None)
        state["_stages"] = None
        return state

    # -- running -----------------------------------------------------------------------------

    def stage_names(self) -> list[str]:
        """The stages' names, in order (the keys of states and gradients)."""
        self._build()
        return list(self._names)

    def forward(self, x: Any) -> Any:
        """Run ``x`` through every stage, in the worker; the last stage's output (torch
        tensors come back as numpy arrays)."""
        self._build()
        if self._torch:
            from .torchstage import no_grad, plain

            with no_grad():
                return plain(self._chain(x))
        return self._chain(x)

    def _chain(self, x: Any, upto: int | None = None) -> Any:
        for i, fwd in enumerate(self._forwards[:upto]):
            x = self._run(i, "forward", fwd, x)
        return x

    def _run(self, i: int, phase: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - named and re-raised, with its cause
            name = self._names[i]
            raise StageError(
                f"stage {name!r} ({i + 1} of {len(self._names)}, "
                f"{type(self._stages[i]).__name__}) failed in {phase}: "
                f"{type(exc).__name__}: {exc}", stage=name, index=i, phase=phase) from exc

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, x: Any, y: Any = None) -> dict[str, Any]:
        """Fit each trainable stage (one with ``fit(x, y)``) on what the stages before it
        output, then forward its output to the next; returns every stage's state."""
        stages = self._build()
        last = len(stages) - 1
        for i, stage in enumerate(stages):
            fit = fit_of(stage)
            if fit is not None:
                self._run(i, "fit", fit, x, y)
            if i < last:
                x = self._run(i, "forward", self._forwards[i], x)
            _progress(i + 1, len(stages), "fit")
        return self.get_state()

    def fit_batches(self, x: Any, y: Any = None, batch_size: int = 32,
                    epochs: int = 1) -> dict[str, Any]:
        """Train on ``x`` (and ``y``) batch by batch, the stages loaded once: each stage
        with ``partial_fit(x, y)`` is fitted on the batch as it reaches it, and torch
        stages take an SGD step (``lr``) on the chain's ``loss``. ``x`` is an array-like
        (sliced into ``batch_size`` rows) or an iterator of batches, ``(x, y)`` pairs or
        ``x`` alone (a streamed argument: batches come as the caller produces them).
        Reports progress per batch (and the loss as the ``loss`` metric); returns
        ``{"batches": n, "losses": [...], "states": {...}}``."""
        self._build()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, not {batch_size!r}")
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, not {epochs!r}")
        sized = hasattr(x, "__len__") and hasattr(x, "__getitem__")
        if not sized and epochs != 1:
            raise ValueError("a stream of batches can be read once: epochs must be 1")
        total = epochs * math.ceil(len(x) / batch_size) if sized else None
        losses: list[float] = []
        done = 0
        for epoch in range(epochs):
            for xb, yb in (_slices(x, y, batch_size) if sized else _batches(x)):
                loss = self._train_batch(xb, yb)
                done += 1
                if loss is not None:
                    losses.append(loss)
                _progress(done, total, f"epoch {epoch + 1}/{epochs}", loss)
        return {"batches": done, "losses": losses, "states": self.get_state()}

    def _train_batch(self, xb: Any, yb: Any) -> float | None:
        h = xb
        last = len(self._stages) - 1
        for i, stage in enumerate(self._stages):
            pfit = partial_fit_of(stage)
            if pfit is not None:
                self._run(i, "partial_fit", pfit, h, yb)
            if i < last or self._torch:
                h = self._run(i, "forward", self._forwards[i], h)
        if not self._torch:
            return None
        from . import torchstage

        torchstage.zero_grad([m for _, m in self._torch])
        loss = self._loss_value(h, yb)
        torchstage.step(self._torch, self._lr)
        return loss

    def _loss_value(self, out: Any, y: Any) -> float:
        from . import torchstage

        try:
            loss = torchstage.loss_of(self._loss)(out, torchstage.as_tensor(y))
            loss.backward()
        except Exception as exc:  # noqa: BLE001
            raise StageError(f"the pipeline's loss failed: {type(exc).__name__}: {exc}",
                             phase="loss") from exc
        return float(loss.detach())

    # -- states and gradients ----------------------------------------------------------------

    def get_state(self, stage: str | None = None) -> Any:
        """Every stage's state by name (or one stage's): a torch module's ``state_dict``
        as numpy arrays, else the stage's ``get_state()``, else its encodable public
        attributes."""
        self._build()
        if stage is not None:
            i = self._index(stage)
            return self._run(i, "get_state", get_state, self._stages[i])
        return {n: self._run(i, "get_state", get_state, s)
                for i, (n, s) in enumerate(zip(self._names, self._stages))}

    def set_state(self, states: dict[str, Any]) -> None:
        """Set the states of the stages named in ``states`` (as ``get_state`` gave them)."""
        self._build()
        if not isinstance(states, dict):
            raise TypeError(f"states must be a dict of stage name -> state, not "
                            f"{type(states).__name__}")
        for name, state in states.items():
            i = self._index(name)
            self._run(i, "set_state", set_state, self._stages[i], state, name)

    def get_gradients(self, x: Any, y: Any) -> dict[str, Any]:
        """The gradients of the loss on ``(x, y)`` for every torch stage's parameters:
        ``{"loss": float, "gradients": {stage: {parameter: array}}}``; nothing is
        updated (``apply_gradients`` does, e.g. with gradients averaged over a Pool)."""
        self._build()
        if not self._torch:
            raise TypeError("get_gradients needs a torch stage (an nn.Module) in the pipeline")
        from . import torchstage

        torchstage.zero_grad([m for _, m in self._torch])
        loss = self._loss_value(self._chain(x), y)
        grads = torchstage.gradients(self._torch)
        torchstage.zero_grad([m for _, m in self._torch])
        return {"loss": loss, "gradients": grads}

    def apply_gradients(self, gradients: dict[str, Any], lr: float | None = None) -> None:
        """An SGD step ``p -= lr * g`` with ``gradients`` as ``get_gradients`` gave them
        (``lr`` defaults to the pipeline's)."""
        self._build()
        from . import torchstage

        torchstage.apply(self._torch, gradients, self._lr if lr is None else lr)

    def _index(self, name: str) -> int:
        try:
            return self._names.index(name)
        except ValueError:
            raise KeyError(f"no stage named {name!r} (stages: {self._names})") from None


def _slices(x: Any, y: Any, size: int) -> Any:
    for start in range(0, len(x), size):
        yield x[start:start + size], (None if y is None else y[start:start + size])


def _batches(stream: Any) -> Any:
    for item in stream:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            yield item[0], item[1]
        else:
            yield item, None


def _progress(step: int, total: int | None, phase: str, loss: float | None = None) -> None:
    from ..worker.scope import _current

    scope = _current.get()
    if scope is None:
        return  # (run in-process, outside a worker call)
    scope.progress(step, total, phase)
    if loss is not None:
        scope.metric("loss", loss, "append")
