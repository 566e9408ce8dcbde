"""Torch stages: run a module on arrays or tensors, its loss, its gradients (imported only
when a stage is a torch module)."""

from __future__ import annotations

from typing import Any, Callable

import torch

LOSSES = {"mse": torch.nn.functional.mse_loss,
          "cross_entropy": torch.nn.functional.cross_entropy,
          "l1": torch.nn.functional.l1_loss}


def as_tensor(x: Any) -> Any:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def forward_module(module: Any) -> Callable[[Any], Any]:
    def forward(x: Any) -> Any:
        return module(as_tensor(x))
    return forward


def loss_of(loss: Any) -> Callable[[Any, Any], Any]:
    if callable(loss):
        return loss
    fn = LOSSES.get(loss)
    if fn is None:
        raise ValueError(f"unknown loss {loss!r}: one of {sorted(LOSSES)} or a callable "
                         "(output, y) -> scalar tensor")
    return fn


def plain(x: Any) -> Any:
    """A chain's output for the caller: tensors as numpy arrays (the host needs no torch)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


def no_grad() -> Any:
    return torch.no_grad()


def zero_grad(modules: list) -> None:
    for mod in modules:
        for p in mod.parameters():
            p.grad = None


def gradients(named: list[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {k: (p.grad.detach().cpu().numpy().copy() if p.grad is not None
                       else torch.zeros_like(p).numpy())
                   for k, p in mod.named_parameters()}
            for name, mod in named}


def apply(named: list[tuple[str, Any]], grads: dict[str, Any], lr: float) -> None:
    """Plain SGD: ``p -= lr * g`` for every parameter named in ``grads``."""
    modules = dict(named)
    for name, per_param in grads.items():
        mod = modules.get(name)
        if mod is None:
            raise KeyError(f"no torch stage named {name!r} (torch stages: {sorted(modules)})")
        params = dict(mod.named_parameters())
        with torch.no_grad():
            for k, g in per_param.items():
                p = params.get(k)
                if p is None:
                    raise KeyError(f"stage {name!r} has no parameter {k!r}")
                p -= lr * torch.as_tensor(g, dtype=p.dtype)


def step(named: list[tuple[str, Any]], lr: float) -> None:
    """An SGD step with the gradients the last backward() left."""
    with torch.no_grad():
        for _, mod in named:
            for p in mod.parameters():
                if p.grad is not None:
                    p -= lr * p.grad
