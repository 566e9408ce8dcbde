"""Pipelines: several stages hosted in one worker (docs/pipelines.md).

``Pipeline([...stages])`` is a Worker target: ``forward`` chains the stages in the worker
with no round trip between them, ``fit`` fits each trainable stage and forwards its output
to the next, ``fit_batches`` loops over batches with progress, states come out and go in
per stage (a torch ``state_dict`` when the stage is a torch module), and torch stages
give and take gradients (data-parallel training on a Pool). Worker side: imports only the
stdlib here; numpy and torch only when a stage uses them.
"""

from .chain import Chain
from .core import Pipeline, StageError
from .stage import Stage

__all__ = ["Chain", "Pipeline", "Stage", "StageError"]
