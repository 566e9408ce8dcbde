"""corral.current() inside a call, and the events a caller receives."""

import pytest

import corral
from conftest import fixture_ref


def test_scope_gives_id_context_and_method(basic):
    fut = basic.options(context={"user": "ann", "trace": [1, 2]}).submit("scope_info")
    info = fut.result(timeout=10)
    assert info == {"id": fut.id, "context": {"user": "ann", "trace": [1, 2]},
                    "method": "scope_info"}
    assert basic.call("scope_info")["context"] == {}


def test_current_outside_a_call_raises():
    with pytest.raises(RuntimeError, match="only available inside a call"):
        corral.current()


def test_progress_and_metrics_arrive_with_the_result(basic):
    fut = basic.submit("report")
    assert fut.result(timeout=10) == "reported"
    assert fut.metrics == {"loss": 0.25, "tokens": 5, "seen": ["a", "b"]}
    progress = [e for e in fut.events if isinstance(e, corral.Progress)]
    assert [(p.step, p.total, p.phase) for p in progress] == [(1, 2, "load"), (2, 2, "done")]
    assert fut.progress.phase == "done"


def test_on_event_callback_sees_every_event_in_order(basic):
    seen = []
    assert basic.options(on_event=seen.append).call("report") == "reported"
    kinds = [type(e).__name__ for e in seen]
    assert kinds == ["Progress", "Metric", "Metric", "Metric", "Metric", "Metric", "Metric",
                     "Progress"]


def test_watch_iterates_events_chunks_and_the_end(basic):
    items = list(basic.watch("report"))
    assert isinstance(items[0], corral.Progress)
    assert isinstance(items[-1], corral.Done) and items[-1].value == "reported"
    streamed = list(basic.watch("count", 2))
    assert [type(i).__name__ for i in streamed] == ["Chunk", "Chunk", "Done"]


def test_bad_metric_mode_is_an_error_in_the_call(basic):
    with pytest.raises(ValueError, match="metric mode must be one of"):
        basic.call("bad_metric")


def test_python_and_fd_level_output_become_log_lines_of_the_call(basic):
    fut = basic.submit("output")
    assert fut.result(timeout=10) == "printed"
    # In the order the call wrote them, whichever layer each went through.
    assert fut.logs == ["python stdout line", "python stderr line", "fd stdout line",
                        "c printf line", "unterminated"]
    streams = {e.text: e.stream for e in fut.events if isinstance(e, corral.Log)}
    assert streams["python stderr line"] == "stderr"
    assert streams["fd stdout line"] == "stdout"
    # Nothing leaks into the next call.
    nxt = basic.submit("add", 1)
    nxt.result(timeout=10)
    assert nxt.logs == []


def test_print_is_attributed_to_its_own_call_when_slots_overlap():
    with corral.Worker(fixture_ref("basic:Basic"), slots=2) as w:
        a = w.submit("print_many", "A", 50, 2)
        b = w.submit("print_many", "B", 50, 2)
        assert a.result(timeout=20) == "A" and b.result(timeout=20) == "B"
        assert a.logs == [f"A {i}" for i in range(50)]
        assert b.logs == [f"B {i}" for i in range(50)]


def test_async_events_reach_async_callers():
    import asyncio

    async def main():
        async with corral.Worker(fixture_ref("basic:Basic")) as w:
            seen = []
            fut = w.options(on_event=seen.append).asubmit("report")
            assert await fut == "reported"
            await asyncio.sleep(0)  # callbacks were scheduled on this loop before the result
            assert len(seen) == 8 and fut.metrics["tokens"] == 5
            items = [i async for i in w.awatch("count", 2)]
            assert [type(i).__name__ for i in items] == ["Chunk", "Chunk", "Done"]
    asyncio.run(main())


def test_a_blocking_call_from_an_on_event_callback_is_refused_not_deadlocked(basic):
    errors = []

    def callback(event):
        try:
            basic.call("add", 1)
        except RuntimeError as exc:
            errors.append(exc)

    fut = basic.options(on_event=callback).submit("report")
    assert fut.result(timeout=10) == "reported"
    assert len(errors) == 8 and "on_event callback" in str(errors[0])
    # submit() from a callback is fine.
    inner = []
    basic.options(on_event=lambda e: inner.append(basic.submit("add", 1))).call("report")
    assert [f.result(timeout=10) for f in inner] == [2] * 8
