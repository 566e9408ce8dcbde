"""Resource accounting: what is free, what loaded plugins hold, what eviction would free.
Free memory and GPUs are injected, so every budget here is exact."""

import os

import pytest

from corral.plugins.errors import InsufficientResources
from corral.plugins.manifest import Resources
from corral.plugins.resources import (
    Gpu,
    Holding,
    ResourceMonitor,
    Usage,
    process_usage,
    system_gpus,
    system_memory_available,
)

MiB = 2**20


def monitor(memory=1000 * MiB, gpus=(), usage=None):
    return ResourceMonitor(memory_available=lambda: memory, gpus=lambda: list(gpus),
                           usage=usage or (lambda pid: Usage()))


def test_a_plugin_that_declares_nothing_always_fits():
    assert monitor(memory=0).fit("x", Resources(), []) == []


def test_declared_memory_must_be_free_counting_what_loaded_plugins_declared():
    m = monitor(memory=1000 * MiB)
    held = [Holding("a", Resources(memory=400 * MiB), 11)]
    assert m.fit("b", Resources(memory=600 * MiB), held) == []
    with pytest.raises(InsufficientResources) as info:
        m.fit("b", Resources(memory=601 * MiB), held)
    err = info.value
    assert err.needed == {"memory": 601 * MiB} and err.free == {"memory": 600 * MiB}
    text = str(err)
    assert "cannot load 'b'" in text and "601.0 MiB of memory" in text
    assert "600.0 MiB is free" in text and "a holds 400.0 MiB" in text
    assert "evict='lru'" in text


def test_what_a_plugin_already_uses_is_not_counted_twice():
    # The free figure already excludes a's 300 MiB of RSS: only the 100 MiB it may still
    # take are held back.
    m = monitor(memory=700 * MiB, usage=lambda pid: Usage(memory=300 * MiB))
    held = [Holding("a", Resources(memory=400 * MiB), 11)]
    assert m.fit("b", Resources(memory=600 * MiB), held) == []
    with pytest.raises(InsufficientResources):
        m.fit("b", Resources(memory=601 * MiB), held)


def test_a_loading_plugin_without_a_pid_holds_all_it_declared():
    m = monitor(memory=1000 * MiB, usage=lambda pid: pytest.fail("no pid, no usage"))
    with pytest.raises(InsufficientResources):
        m.fit("b", Resources(memory=600 * MiB), [Holding("a", Resources(memory=500 * MiB),
                                                         None)])


def test_a_gpu_plugin_is_refused_clearly_without_a_gpu():
    with pytest.raises(InsufficientResources, match="no GPU was found") as info:
        monitor(gpus=()).fit("big", Resources(gpus=1), [])
    assert info.value.needed == {"gpus": 1} and info.value.free == {"gpus": 0}
    with pytest.raises(InsufficientResources, match="of GPU memory, and no GPU"):
        monitor(gpus=()).fit("big", Resources(gpu_memory=MiB), [])


def test_gpu_count_and_gpu_memory_are_checked():
    gpus = [Gpu(0, "A", 16000 * MiB, 8000 * MiB)]
    with pytest.raises(InsufficientResources, match="needs 2 GPU"):
        monitor(gpus=gpus).fit("x", Resources(gpus=2), [])
    held = [Holding("a", Resources(gpus=1, gpu_memory=5000 * MiB), 11)]
    assert monitor(gpus=gpus).fit("x", Resources(gpus=1, gpu_memory=3000 * MiB), held) == []
    with pytest.raises(InsufficientResources, match="of GPU memory, 2.9 GiB is free"):
        monitor(gpus=gpus).fit("x", Resources(gpus=1, gpu_memory=3001 * MiB), held)


def test_eviction_takes_the_least_recently_used_until_it_fits():
    m = monitor(memory=1000 * MiB)
    a, b, c = (Holding(n, Resources(memory=300 * MiB), None) for n in "abc")
    # 100 MiB free; 500 needed: two of them must go, in the order given (LRU first).
    assert m.fit("d", Resources(memory=500 * MiB), [a, b, c], [b, a, c]) == [b, a]


def test_eviction_that_cannot_make_enough_room_evicts_nothing_and_says_so():
    m = monitor(memory=1000 * MiB)
    a, b = (Holding(n, Resources(memory=450 * MiB), None) for n in "ab")
    with pytest.raises(InsufficientResources, match="unloading every idle plugin would not"):
        m.fit("c", Resources(memory=900 * MiB), [a, b], [a])


def test_unknown_free_memory_is_not_checked():
    m = ResourceMonitor(memory_available=lambda: None, usage=lambda pid: Usage())
    assert m.fit("x", Resources(memory=10**15), []) == []


def test_the_system_sources_read_this_machine():
    with open("/proc/meminfo") as f:
        total = int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) * 1024
    assert 0 < system_memory_available() <= total
    gpus = system_gpus()  # none here; real devices where there are some
    assert all(g.total >= g.free >= 0 for g in gpus)
    assert process_usage(os.getpid()).memory > 1024 * 1024
    assert process_usage(2**22 + 12345) == Usage()  # no such process: uses nothing
