"""Big arrays and bytes through shared memory: no extra copies, and nothing left behind."""

import gc
import os
import subprocess
import sys
import textwrap

import numpy as np
import psutil
import pytest

import corral
from conftest import fixture_ref, wait_until
from corral.protocol.shm import DEFAULT_THRESHOLD, local_pool

BIG = DEFAULT_THRESHOLD * 2


@pytest.fixture
def w():
    with corral.Worker(fixture_ref("value_types:Values")) as worker:
        yield worker


def leases(worker) -> int:
    """Host segments the worker still holds, once its pending releases have arrived."""
    worker.health()  # a control round trip: every Release sent before it has been read
    return worker._conn.exporter.lent()


def on_shared_memory(arr) -> bool:
    import mmap

    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def test_big_arrays_arrive_as_views_on_shared_memory(w):
    arr = np.arange(BIG // 8, dtype=np.float64)
    assert w.call("owns_data", arr) is False  # the worker reads the segment, no copy
    back = w.call("echo", arr)
    assert on_shared_memory(back) and np.array_equal(back, arr)
    small = w.call("echo", np.arange(10.0))
    assert not on_shared_memory(small)  # below the threshold: in the frame


def test_big_bytes_keep_their_type(w):
    data = os.urandom(BIG)
    assert w.call("echo", data) == data and type(w.call("echo", data)) is bytes
    back = w.call("echo", bytearray(data))
    assert type(back) is bytearray and back == data


def test_shared_allocation_crosses_with_no_copy(w):
    arr = corral.zeros((256, 256), dtype=np.float32)
    w.call("fill", arr, 7.0)  # the worker writes into the host's memory
    assert (arr == 7.0).all()
    view = arr[10:20, ::2]  # a view of a shared array: copied (not contiguous), still exact
    assert np.array_equal(w.call("echo", view), view)


def test_worker_can_return_shared_allocations(w):
    back = w.call("make_array", 100_000, True)
    assert np.array_equal(back, np.arange(100_000.0))
    assert w.call("pool_stats")["segments"] >= 1
    del back
    gc.collect()
    w.call("echo", 1)  # carries our Release
    wait_until(lambda: w.call("pool_stats")["idle_segments"] >= 1, what="the release")


def test_leases_end_after_many_calls(w):
    arr = np.ones(BIG // 4, dtype=np.float32)
    for i in range(10_000):
        back = w.call("echo", arr if i % 2 else arr.tobytes())
    del back
    gc.collect()
    w.call("echo", 0)
    assert leases(w) == 0
    # Segments are pooled and reused, not one per call: how many exist depends only on how
    # many leases were in flight while Release messages travelled.
    assert local_pool().stats()["segments"] <= 64
    assert w.call("pool_stats")["segments"] <= 64


def test_a_kept_argument_keeps_its_lease_until_dropped(w):
    arr = np.ones(BIG, dtype=np.uint8)
    assert w.call("keep", arr) == BIG
    assert leases(w) == 1  # the worker holds a view of our segment
    w.call("drop")
    w.call("echo", 0)
    assert leases(w) == 0


def test_a_crash_ends_every_lease(w):
    arr = np.ones(BIG, dtype=np.uint8)
    w.call("keep", arr)
    assert leases(w) == 1
    with pytest.raises(corral.WorkerCrashed):
        w.call("die")
    assert w._conn.exporter.lent() == 0


def test_a_forged_shared_memory_reference_is_a_protocol_error(w):
    with pytest.raises(corral.ProtocolError, match="never announced"):
        w.call("forged_shm_reply")


@pytest.mark.parametrize("claim", [(1 << 16) + 1, (1 << 16) - 1, 0])
def test_a_shape_that_does_not_fill_its_region_is_a_protocol_error(w, claim):
    """A peer's array description is untrusted: a shape bigger than the region it names
    would read past it, a smaller one is not what was sent either (shm.element_count)."""
    with pytest.raises(corral.ProtocolError, match="does not fill"):
        w.call("misshapen_shm_reply", claim)
    assert w.call("echo", 1) == 1  # the worker was replaced; the next call works


HOST_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import corral
    w = corral.Worker(sys.argv[1]).start()
    arr = np.ones(1 << 20, dtype=np.float64)
    w.call("keep", arr)                 # the worker holds our segment
    held = w.call("make_array", 1 << 17, True)  # we hold one of the worker's
    print(w.pid, flush=True)
    how = sys.argv[2]
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(0)
    else:
        sys.exit(0)                     # atexit stops the worker
""")


@pytest.mark.parametrize("how", ["kill", "exit", "sys.exit"])
def test_nothing_is_left_when_the_host_ends(tmp_path, how):
    script = tmp_path / "host.py"
    script.write_text(HOST_SCRIPT)
    done = subprocess.run([sys.executable, str(script), fixture_ref("value_types:Values"), how],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    pid = int(done.stdout.split()[0])

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(gone, timeout=5, what=f"worker {pid} to exit after its host ({how})")
    leftovers = [n for n in os.listdir("/dev/shm") if "corral" in n]
    assert not leftovers


def test_segments_the_sender_closes_are_unmapped_by_the_receiver(w):
    pool = local_pool()
    saved = pool._max_idle
    pool._max_idle = 0  # keep nothing idle: every released segment is closed
    try:
        for size in range(20):  # a different size each time: no reuse
            w.call("echo", np.ones(BIG + size * 4096, dtype=np.uint8))
        gc.collect()
        w.call("echo", 0)
        w.call("echo", 0)
        assert w.call("mapped_segments") <= 2
    finally:
        pool._max_idle = saved


def test_the_pool_evicts_old_idle_segments_to_keep_a_new_one():
    from corral.protocol.shm import LocalPool

    page = 4096
    pool = LocalPool(max_idle_bytes=10 * page)
    small = [pool.acquire(page) for _ in range(8)]
    big = pool.acquire(8 * page)
    for seg in small:
        pool.release(seg)
    pool.release(big)  # kept: the oldest small ones make room
    stats = pool.stats()
    assert stats["idle_bytes"] <= 10 * page and stats["segments"] == stats["idle_segments"]
    assert pool.acquire(8 * page) is big  # and it is what the next big transfer reuses
    huge = pool.acquire(100 * page)
    pool.release(huge)  # alone above the cap: closed, not kept
    assert pool.stats()["bytes"] <= 10 * page + 8 * page


def test_an_echo_comes_back_by_reference_to_our_own_segment(w):
    arr = np.arange(BIG // 8, dtype=np.float64)
    back = w.call("echo", arr)
    assert np.array_equal(back, arr)
    base = back
    while isinstance(base, np.ndarray):
        base = base.base
    # The worker sent no copy: the result is a view on the host's own pool segment.
    owned = {id(seg.mm) for seg in local_pool()._live.values()}
    assert id(base.obj) in owned
    del back, base
    gc.collect()
    w.call("echo", 0)
    assert leases(w) == 0


def test_a_worker_cannot_name_a_host_segment_it_does_not_hold(w):
    with pytest.raises(corral.ProtocolError, match="does not hold"):
        w.call("forged_own_reference")
