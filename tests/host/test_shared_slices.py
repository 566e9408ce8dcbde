"""A worker that sends back views of an argument's shared memory (by reference) and then
drops the argument: the host must read the frames that refer to the segment before the
Release that ends the worker's lease on it, although the Release travels on the control
channel and the frames on the data channel (protocol/endpoint.py: ``Release.after``).
Before that rule a generator yielding slices of its argument broke the protocol ("the peer
referred to segment N, which it does not hold") and the worker was killed."""

import numpy as np

import corral
from conftest import fixture_ref

SLICES = fixture_ref("slices:Slices")


def test_streamed_slices_of_an_argument_arrive_and_the_worker_stays_up():
    a = np.arange(1_000_000, dtype=np.float64)
    with corral.Worker(SLICES) as w:
        pid = w.pid
        for _ in range(20):
            got = list(w.stream("pieces", a))
            assert [p[0] for p in got] == [0.0, 250_000.0, 500_000.0, 750_000.0]
            assert np.array_equal(np.concatenate(got), a)
            assert np.array_equal(w.call("tail", a), a[10:])
            assert len(w.call("pieces", a, 8)) == 8
        assert w.pid == pid and w.crashes == []


def test_slices_from_many_calls_in_flight_at_once():
    arrays = [np.full(200_000, i, dtype=np.int64) for i in range(16)]
    with corral.Worker(SLICES, slots=4) as w:
        futures = [w.submit("pieces", arr, 2) for arr in arrays]
        for i, fut in enumerate(futures):
            halves = fut.result(60)
            assert [h.shape for h in halves] == [(100_000,)] * 2
            assert all((h == i).all() for h in halves)
        assert w.crashes == []
