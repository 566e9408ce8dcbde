"""One call surface over every runner (issue 13): the kinds of call, the one encoder, the
future family, and the Runner interface that Worker and Pool satisfy."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

import corral
from conftest import fixture_ref
from corral.host.caller import CallKind, CallSurface, Runner
from corral.host.calls import AsyncCallFuture, CallFuture

CONTEXT = {"pair": (1, 2), "big": 2**70, "nested": {"s": {3}}}


def test_map_and_starmap_send_the_context_through_the_value_codec(basic):
    # Before the one encode_call(), map() sent the context raw: a tuple came back a list
    # and 2**70 raised a bare OverflowError.
    opts = basic.options(context=CONTEXT)
    for got in [*opts.map("scope_info", []), *opts.starmap("scope_info", [(), ()])]:
        assert got["context"] == CONTEXT
        assert type(got["context"]["pair"]) is tuple
    assert opts.call("scope_info")["context"] == CONTEXT


def test_a_pool_map_sends_the_context_exactly_too():
    with corral.Pool(fixture_ref("basic:Basic"), workers=1) as pool:
        got = list(pool.options(context=CONTEXT).starmap("scope_info", [(), ()]))
        assert [g["context"] for g in got] == [CONTEXT, CONTEXT]


def test_worker_and_pool_are_runners_with_one_call_surface():
    with corral.Worker(fixture_ref("basic:Basic")) as w:
        assert isinstance(w, Runner) and isinstance(w, CallSurface)
        assert w.capacity is None and w.usage().ready == 1
    pool = corral.Pool(fixture_ref("basic:Basic"), workers=1, max_queue=3)
    assert isinstance(pool, Runner) and isinstance(pool, CallSurface)
    assert pool.capacity == pool.slots + 3


def test_pool_futures_are_worker_futures():
    with corral.Pool(fixture_ref("basic:Basic"), workers=1) as pool:
        fut = pool.submit("add", 1, 0)
        assert isinstance(fut, CallFuture) and isinstance(fut, concurrent.futures.Future)
        assert fut.result(10) == 1
        assert fut.attempts == 1 and fut.worker is pool.workers[0] and not fut.queued

        async def main():
            afut = pool.asubmit("add", 2, 0)
            assert isinstance(afut, AsyncCallFuture)
            return await afut

        assert asyncio.run(main()) == 2


def test_a_worker_future_names_its_worker_and_is_never_queued(basic):
    fut = basic.submit("add", 1, 0)
    assert fut.result(10) == 1
    assert fut.worker is basic and fut.attempts == 1 and not fut.queued
    seen = []
    fut.add_sent_callback(lambda: seen.append(True))
    assert seen == [True]


@pytest.mark.parametrize("kind, streams, events", [
    (CallKind.CALL, False, False), (CallKind.SUBMIT, False, False),
    (CallKind.STREAM, True, False), (CallKind.WATCH, True, True),
    (CallKind.ASUBMIT, False, False), (CallKind.ASTREAM, True, False),
    (CallKind.AWATCH, True, True),
])
def test_call_kinds(kind, streams, events):
    assert kind.streams is streams and kind.events is events
