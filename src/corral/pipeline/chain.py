"""``Chain``: stages in different workers (each in its own environment), run in turn
from the host.

Each stage is a runner and a method: ``Chain([(tokenizer, "encode"), (model, "forward",
{"temperature": 0.5})])``. ``forward(x)`` calls each with the previous one's output. A big
array one worker returns is mapped by the host without a copy and handed to the next
worker's shared memory as it is (protocol/handoff.py), so the host never copies the
intermediates. A stage that fails raises ``StageError`` naming it; its error is the cause.
"""

from __future__ import annotations

from typing import Any

from .core import StageError


class Chain:
    """Stages in different workers: ``(runner, method)`` or ``(runner, method, kwargs)``;
    ``names`` default to the method names."""

    def __init__(self, stages: Any, names: list[str] | None = None):
        self._stages = []
        for i, spec in enumerate(stages):
            if not isinstance(spec, tuple) or len(spec) not in (2, 3) \
                    or not isinstance(spec[1], str):
                raise TypeError(f"stage {i}: a Chain stage is (runner, method) or (runner, "
                                f"method, kwargs), not {spec!r}")
            kwargs = spec[2] if len(spec) == 3 else {}
            if not isinstance(kwargs, dict):
                raise TypeError(f"stage {i}: kwargs must be a dict, not {type(kwargs).__name__}")
            self._stages.append((spec[0], spec[1], kwargs))
        if not self._stages:
            raise ValueError("a Chain needs at least one stage")
        self.names = list(names) if names is not None else [s[1] for s in self._stages]
        if len(self.names) != len(self._stages):
            raise ValueError(f"{len(self.names)} names for {len(self._stages)} stages")

    def forward(self, x: Any) -> Any:
        """Run ``x`` through every stage in turn; the last one's output."""
        n = len(self._stages)
        for i, (runner, method, kwargs) in enumerate(self._stages):
            try:
                x = runner.call(method, x, **kwargs)
            except Exception as exc:  # noqa: BLE001 - named and re-raised, with its cause
                where = getattr(runner, "target_name", type(runner).__name__)
                raise StageError(f"stage {self.names[i]!r} ({i + 1} of {n}, {method}() on "
                                 f"{where}) failed: {type(exc).__name__}: {exc}",
                                 stage=self.names[i], index=i, phase=method) from exc
        return x
