"""A stage's state, as values the codec carries exactly (never a pickle).

* a torch module: its ``state_dict()``, each tensor as a numpy array;
* else the stage's own ``get_state()`` / ``set_state(state)``;
* else its public attributes whose values the codec can encode (numbers, strings,
  arrays, lists and dicts of them...), set back with ``setattr``.
"""

from __future__ import annotations

from typing import Any

from ..protocol.values import to_wire
from .stage import is_torch_module


def get_state(stage: Any) -> Any:
    if is_torch_module(stage):
        return {k: v.detach().cpu().numpy().copy() for k, v in stage.state_dict().items()}
    own = getattr(stage, "get_state", None)
    if callable(own):
        return own()
    return {k: v for k, v in vars(stage).items()
            if not k.startswith("_") and not callable(v) and _encodable(v)} \
        if hasattr(stage, "__dict__") else {}


def set_state(stage: Any, state: Any, name: str) -> None:
    if is_torch_module(stage):
        import torch

        if not isinstance(state, dict):
            raise TypeError(f"the state of torch stage {name!r} must be a dict of arrays "
                            f"(its state_dict), not {type(state).__name__}")
        stage.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        return
    own = getattr(stage, "set_state", None)
    if callable(own):
        own(state)
        return
    if not isinstance(state, dict):
        raise TypeError(f"the state of stage {name!r} must be a dict of attributes, not "
                        f"{type(state).__name__}")
    for k, v in state.items():
        if not isinstance(k, str) or k.startswith("_"):
            raise ValueError(f"stage {name!r}: {k!r} is not a public attribute name")
        setattr(stage, k, v)


def _encodable(value: Any) -> bool:
    if type(value).__name__ == "ndarray":
        return True
    try:
        to_wire(value)
    except (TypeError, ValueError):
        return False
    return True
