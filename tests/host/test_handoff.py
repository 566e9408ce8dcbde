"""A worker's array sent on to another worker without the host copying it
(protocol/handoff.py): the host hands the segment over."""

import numpy as np
import pytest

import corral
from conftest import fixture_ref, wait_until
from corral.pipeline import Chain, StageError
from corral.protocol import shm

TARGET = fixture_ref("handoff:Buffers")
N = 1 << 18  # 2 MiB of float64: shared memory


@pytest.fixture
def pair():
    with corral.Worker(TARGET) as a, corral.Worker(TARGET) as b:
        yield a, b


def test_the_next_worker_maps_the_first_workers_memory(pair):
    a, b = pair
    arr = a.call("make", N, 2.0)
    made = shm.local_pool().stats()["segments"]
    assert b.call("hold", arr) == 2.0 * N
    assert shm.local_pool().stats()["segments"] == made  # the host made no segment for it
    a.call("poke", 5, 99.0)  # A writes its own memory: B sees it, there is one copy of it
    assert b.call("peek", 5) == 99.0
    assert arr[5] == 99.0


def test_an_ordinary_result_is_handed_on_and_comes_back_by_reference(pair):
    a, b = pair
    arr = a.call("make_plain", N, 3.0)
    assert b.call("total", arr) == 3.0 * N
    back = b.call("echo", arr)
    assert np.shares_memory(back, arr)  # rebuilt on the host's mapping of A's segment
    tail = b.call("tail", arr, N // 2)  # (big enough for shared memory: a slice, no copy)
    assert np.shares_memory(tail, arr[N // 2:]) and len(tail) == N // 2


def test_the_lease_ends_when_the_next_worker_lets_go(pair):
    a, b = pair
    arr = a.call("make_plain", N)
    b.call("hold", arr)
    proxies = b._conn.exporter._proxies
    assert len(proxies) == 1
    (proxy,) = proxies.values()
    assert len(proxy.holds) == 1  # the host's array, held for B
    b.call("drop")
    b.call("total", np.ones(3))  # (a call after the drop carries B's release)
    wait_until(lambda: not proxy.holds, what="B to release the handed-over segment")
    # The proxy stays, idle: A's next result in that segment reaches B on the same mapping.
    del arr
    again = a.call("make_plain", N, 6.0)
    assert b.call("hold", again) == 6.0 * N
    assert list(proxies) == [proxy.id] and len(proxy.holds) == 1
    a.stop()  # A's segments end: B is told to unmap the proxy
    assert not proxies and proxy.id in b._conn.exporter.forgotten


def test_the_handed_array_outlives_the_first_worker(pair):
    a, b = pair
    arr = a.call("make_plain", N, 4.0)
    b.call("hold", arr)
    a.stop()
    assert b.call("peek", N - 1) == 4.0  # a memfd lives while anyone maps it
    assert arr[-1] == 4.0


def test_a_chain_across_workers_names_the_stage_that_failed(pair):
    a, b = pair
    chain = Chain([(a, "make_plain"), (b, "tail", {"k": 3})], names=["make", "tail"])
    assert chain.forward(5).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(StageError, match=r"stage 'make' \(1 of 2"):
        chain.forward("not a size")
    bad = Chain([(b, "echo"), (a, "fail")])
    with pytest.raises(StageError, match=r"stage 'fail' \(2 of 2, fail\(\) "
                                                         r"on .*Buffers\).*cannot use 4"):
        bad.forward(np.ones(4))
