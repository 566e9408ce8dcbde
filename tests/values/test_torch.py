"""torch CPU tensors cross as tensors (torch is in the dev extra: it imports on both sides)."""

import numpy as np
import pytest
import torch

import corral
from conftest import fixture_ref


@pytest.fixture(scope="module")
def w():
    with corral.Worker(fixture_ref("value_types:Values")) as worker:
        yield worker


@pytest.mark.parametrize("tensor", [
    torch.arange(12, dtype=torch.int64).reshape(3, 4),
    torch.linspace(0, 1, 7, dtype=torch.float32),
    torch.tensor(3.5, dtype=torch.float64),                 # 0-d
    torch.zeros((0, 2), dtype=torch.float16),               # empty
    torch.tensor([True, False]),
    torch.tensor([1 + 2j], dtype=torch.complex64),
    torch.arange(6, dtype=torch.bfloat16),                  # no numpy twin
    torch.arange(12.0).reshape(3, 4).t(),                   # not contiguous
    torch.ones(300_000, dtype=torch.float32),               # big: shared memory
], ids=lambda t: f"{t.dtype}{tuple(t.shape)}")
def test_tensors_round_trip(w, tensor):
    back = w.call("echo", tensor)
    assert type(back) is torch.Tensor
    assert back.dtype == tensor.dtype and back.shape == tensor.shape
    assert torch.equal(back, tensor)


def test_requires_grad_is_kept(w):
    t = torch.ones(3, requires_grad=True)
    back = w.call("echo", t)
    assert back.requires_grad and not back.grad_fn


def test_the_worker_gets_a_tensor(w):
    assert w.call("type_name", torch.ones(2)) == "torch.Tensor"


def test_tensors_inside_structures(w):
    value = {"x": (torch.ones(2), [torch.zeros(1, dtype=torch.int8)])}
    back = w.call("echo", value)
    assert type(back["x"]) is tuple and torch.equal(back["x"][0], torch.ones(2))


def test_parameters_and_other_devices_are_refused_clearly(w):
    with pytest.raises(TypeError, match=r"detach\(\)"):
        w.call("echo", torch.nn.Parameter(torch.ones(2)))
    with pytest.raises(TypeError, match=r"to_dense"):
        w.call("echo", torch.eye(2).to_sparse())


def test_numpy_and_torch_share_the_transport(w):
    arr = np.arange(10.0)
    assert type(w.call("echo", arr)) is np.ndarray
