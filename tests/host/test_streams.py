"""Streams both ways with credit flow control (docs/streams.md)."""

import asyncio
import itertools
import threading

import pytest

import corral
from conftest import fixture_ref, wait_until

TARGET = fixture_ref("streams:Streams")


@pytest.fixture
def w():
    with corral.Worker(TARGET, stream_window=8) as worker:
        yield worker


# -- output flow control -------------------------------------------------------------------


def _watch_produced(events: list):
    def on_event(ev):
        if type(ev) is corral.Progress:
            events.append(int(ev.step))
    return on_event


def test_a_fast_generator_runs_at_most_a_window_ahead_of_a_slow_reader(w):
    produced: list = []
    stream = w.options(on_event=_watch_produced(produced)).stream("count", 400)
    seen = 0
    for i, chunk in enumerate(stream):
        assert chunk == i
        seen += 1
        # The worker reports each chunk before it may send it: it never gets further
        # than the window (8) beyond what this reader took, plus the one it holds.
        assert stream.buffered <= 8
        assert (produced[-1] if produced else 0) <= seen + 8 + 1
        if i == 0:  # be slow: let the generator run as far as it is allowed
            wait_until(lambda: len(produced) >= 9, what="the generator to fill its window")
    assert seen == 400


def test_without_a_reader_the_worker_waits_and_a_close_stops_it(w):
    produced: list = []
    stream = w.options(on_event=_watch_produced(produced)).stream("count", 10_000)
    assert next(stream) == 0
    wait_until(lambda: len(produced) >= 9, what="the window to fill")
    stream.close()  # the generator waits for credit: the cancel wakes and stops it
    assert w.call("pid") == w.pid  # the worker serves on (one slot: the call ended)
    assert max(produced) <= 10


def test_async_generators_are_flow_controlled_too(w):
    produced: list = []

    async def main():
        got = []
        stream = w.options(on_event=_watch_produced(produced)).astream("acount", 200)
        async for chunk in stream:
            got.append(chunk)
            assert stream.buffered <= 8 + 2  # (+ the end markers)
            if chunk == 0:
                while len(produced) < 9:
                    await asyncio.sleep(0.001)
            assert max(produced) <= len(got) + 9
        return got

    assert asyncio.run(main()) == list(range(200))


def test_watch_counts_only_chunks_for_credit(w):
    kinds = [type(ev).__name__ for ev in w.watch("count", 50)]
    assert kinds.count("Chunk") == 50 and kinds[-1] == "Done"


def test_call_of_a_generator_still_collects_every_chunk(w):
    assert w.call("count", 100) == list(range(100))
    assert w.submit("acount", 100).result() == list(range(100))


def test_big_chunks_with_a_slow_reader_keep_host_memory_bounded(w):
    np = pytest.importorskip("numpy")
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()
    base = me.memory_info().rss
    peak = base
    n, size = 300, 1 << 20  # 300 MiB in all, 1 MiB a chunk (shared memory)
    for i, a in enumerate(w.stream("arrays", n, size)):
        assert a.nbytes == size and a[0] == i % 251
        del a
        if i % 10 == 0:
            peak = max(peak, me.memory_info().rss)
    assert (peak - base) < 80 * (1 << 20), f"host grew {(peak - base) >> 20} MiB"


# -- streamed inputs -----------------------------------------------------------------------


def test_a_generator_argument_is_streamed_and_the_method_gets_an_iterator(w):
    assert w.call("total", (i for i in range(100))) == sum(range(100))
    assert w.call("total", iter([1, 2, 3])) == 6
    assert w.call("kind", iter([])) == "InputStream"


def test_bidirectional_stream_one_output_per_chunk(w):
    out = list(w.stream("doubled", (i for i in range(50))))
    assert out == [2 * i for i in range(50)]


def test_several_streamed_arguments_and_plain_ones_together(w):
    assert w.call("tagged", iter([3, 1, 2]), right=iter([1, 2]), scale=10) == [[1, 2, 3],
                                                                              [10, 20]]


def test_a_producer_faster_than_the_method_is_held_to_the_window(w):
    taken: list = []
    made = itertools.count()

    def produce():
        for i in range(300):
            next(made)
            # Never more than the window (8) ahead of what the method took.
            assert i <= (taken[-1] if taken else 0) + 8 + 1
            yield i

    def on_event(ev):
        if type(ev) is corral.Progress:
            taken.append(int(ev.step))

    assert w.options(on_event=on_event).call("counted", produce()) == 300


def test_big_chunks_go_through_shared_memory(w):
    np = pytest.importorskip("numpy")
    chunks = (np.full(1 << 20, i, dtype=np.uint8) for i in range(40))
    assert w.call("nbytes", chunks) == [40 << 20, sum(range(40))]


def test_the_method_returning_early_stops_the_producer(w):
    closed = threading.Event()

    def produce():
        try:
            for i in itertools.count():
                yield i
        finally:
            closed.set()

    assert w.call("take", produce(), 5) == [0, 1, 2, 3, 4]
    assert closed.wait(10)
    assert w.call("total", iter([1])) == 1


def test_a_producer_that_raises_fails_the_call_with_a_typed_error(w):
    def produce():
        yield 1
        yield 2
        raise KeyError("sensor unplugged")

    with pytest.raises(corral.StreamInputError, match="sensor unplugged") as info:
        w.call("total", produce())
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.argument == "args[0]" and info.value.chunks == 2
    with pytest.raises(corral.StreamInputError):
        list(w.stream("doubled", produce()))
    assert w.call("total", iter([5])) == 5  # the worker serves on


def test_the_method_raising_mid_stream_ends_both_directions(w):
    closed = threading.Event()

    def produce():
        try:
            yield from itertools.count()
        finally:
            closed.set()

    stream = w.stream("fail_at", produce(), 3)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="chunk 3 is bad"):
        next(stream)
    assert closed.wait(10)
    assert w.call("total", iter([2])) == 2


def test_cancel_and_timeout_while_the_method_waits_for_input(w):
    gate = threading.Event()

    def produce():
        yield 1
        gate.wait(30)  # the producer is slow: the method waits for its next chunk
        yield 2

    with pytest.raises(corral.CallTimeout):
        w.options(timeout=0.5).call("total", produce())
    gate.set()
    gate.clear()
    fut = w.submit("total", produce())
    with pytest.raises(corral.Cancelled):
        fut.cancel()
        fut.result()
    gate.set()
    assert w.call("total", iter([3])) == 3


def test_an_unsendable_chunk_fails_the_call_naming_it(w):
    with pytest.raises(TypeError, match=r"chunk 1 of args\[0\]"):
        w.call("total", iter([1, object()]))
    assert w.call("total", iter([4])) == 4


def test_async_iterators_and_async_methods(w):
    async def produce():
        for i in range(20):
            await asyncio.sleep(0)
            yield i

    async def main():
        total = await w.acall("total", produce())
        atotal = await w.acall("atotal", produce())
        doubled = [x async for x in w.astream("adoubled", iter(range(5)))]
        return total, atotal, doubled

    assert asyncio.run(main()) == (190, 190, [0, 2, 4, 6, 8])


def test_an_async_iterator_needs_an_event_loop(w):
    async def produce():
        yield 1

    with pytest.raises(TypeError, match="async iterator"):
        w.call("total", produce())
    assert w.call("total", iter([1])) == 1


def test_streamed_inputs_with_several_slots():
    with corral.Worker(TARGET, slots=3, stream_window=4) as w:
        futs = [w.submit("total", iter(range(k * 10))) for k in range(6)]
        assert [f.result() for f in futs] == [sum(range(k * 10)) for k in range(6)]


def test_big_streamed_chunks_reuse_a_window_of_segments(w):
    np = pytest.importorskip("numpy")
    from corral.protocol import shm

    before = shm.local_pool().stats()["segments"]
    chunks = (np.full(1 << 18, i % 200, dtype=np.uint8) for i in range(200))  # 50 MiB
    assert w.call("nbytes", chunks) == [200 << 18, sum(i % 200 for i in range(200))]
    # Each credit the worker gives back carries the segments its method let go: the
    # feeder reuses them, so about a window of them ever exists, not one per chunk.
    assert shm.local_pool().stats()["segments"] - before <= 2 * 8 + 2
    w.health()  # (a control round trip: any Release sent on its own has been read)
    assert w._conn.exporter.lent() == 0  # every chunk's lease ended, none leaked


def test_a_pool_never_retries_a_call_whose_streamed_argument_it_cannot_replay():
    """idempotent=True retries a call after a crash, but a streamed argument is an iterator
    the first attempt has consumed: sent again, the method would get only the rest."""
    fed = []

    def chunks():
        for i in range(10):
            fed.append(i)
            yield i

    with corral.Pool(TARGET, workers=2) as pool:
        with pytest.raises(corral.WorkerCrashed):
            pool.options(idempotent=True).call("die_after", chunks(), 3)
        assert pool.stats().retries == 0
        assert fed[:3] == [0, 1, 2]  # consumed by the first attempt only
        # A plain idempotent call still retries as before.
        assert pool.options(idempotent=True).call("total", iter([1, 2, 3])) == 6
