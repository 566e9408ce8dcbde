"""Errors raised in the worker come back typed, with their traceback and causes."""

import pytest

import corral


def test_builtin_exception_is_remote_error_and_the_builtin(basic):
    with pytest.raises(ValueError) as info:
        basic.call("boom")
    err = info.value
    assert isinstance(err, corral.RemoteError)
    assert err.type_name == "builtins.ValueError"
    assert err.message == "bad value"
    assert str(err) == "builtins.ValueError: bad value"
    assert 'raise ValueError("bad value")' in err.remote_traceback
    assert "in boom" in err.remote_traceback
    assert "runner.py" not in err.remote_traceback  # corral's own frames are cut


def test_explicit_cause_chain_is_kept(basic):
    with pytest.raises(RuntimeError) as info:
        basic.call("chained")
    err = info.value
    assert err.type_name == "builtins.RuntimeError"
    assert isinstance(err.__cause__, KeyError)
    assert isinstance(err.__cause__, corral.RemoteError)
    assert err.__cause__.message == "'inner'"
    assert "The above exception was the direct cause" in err.remote_traceback


def test_implicit_context_is_kept(basic):
    with pytest.raises(ZeroDivisionError) as info:
        basic.call("implicit_chain")
    assert isinstance(info.value.__context__, KeyError)


def test_custom_exception_keeps_its_qualified_name(basic):
    with pytest.raises(corral.RemoteError) as info:
        basic.call("custom")
    assert info.value.type_name.endswith("basic.CustomError")
    assert not isinstance(info.value, ValueError)


def test_builtin_with_strict_constructor_still_works(basic):
    with pytest.raises(UnicodeDecodeError) as info:
        basic.call("unicode_error")
    assert "can't decode byte 0xff" in info.value.message


def test_remote_traceback_is_printed_with_the_error(basic):
    import traceback

    with pytest.raises(ValueError) as info:
        basic.call("boom")
    text = "".join(traceback.format_exception(info.value))
    assert "Remote traceback (in the worker)" in text and "in boom" in text


def test_unknown_method_names_what_exists(basic):
    with pytest.raises(corral.MethodNotFound) as info:
        basic.call("nope")
    assert isinstance(info.value, AttributeError)
    assert "'nope'" in str(info.value) and "greet" in str(info.value)


def test_arguments_that_do_not_fit_name_method_and_signature(basic):
    with pytest.raises(corral.ArgumentError) as info:
        basic.call("add", 1, 2, 3)
    err = info.value
    assert isinstance(err, TypeError)
    assert err.method == "add" and err.signature == "(a: int, b: int = 1) -> int"
    assert "add(a: int, b: int = 1) -> int" in str(err)
    with pytest.raises(corral.ArgumentError, match="missing a required argument: 'a'"):
        basic.call("add")
    with pytest.raises(corral.ArgumentError, match="unexpected keyword argument 'c'"):
        basic.call("add", 1, c=2)
    with pytest.raises(corral.ArgumentError, match="aadd"):
        basic.call("aadd")
    with pytest.raises(corral.ArgumentError, match="count"):
        list(basic.stream("count"))


def test_type_error_inside_the_method_is_not_an_argument_error(basic):
    with pytest.raises(TypeError) as info:
        basic.call("inner_type_error")
    assert not isinstance(info.value, corral.ArgumentError)
    assert isinstance(info.value, corral.RemoteError)


def test_worker_stays_usable_after_errors(basic):
    for method in ("boom", "chained", "custom"):
        with pytest.raises(corral.RemoteError):
            basic.call(method)
    assert basic.call("add", 1) == 2


def test_error_in_a_stream_ends_it_with_the_error(tmp_path):
    (tmp_path / "m.py").write_text(
        "class M:\n"
        "    def gen(self):\n"
        "        yield 1\n"
        "        raise KeyError('mid-stream')\n")
    with corral.Worker(f"{tmp_path}/m.py:M") as w:
        stream = w.stream("gen")
        assert next(stream) == 1
        with pytest.raises(KeyError):
            next(stream)
        with pytest.raises(StopIteration):
            next(stream)


def test_values_nested_too_deeply_are_a_clear_error_and_the_worker_lives(basic):
    deep = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        basic.call("add", deep)
    assert basic.call("add", 1) == 2


def test_a_result_too_big_for_a_frame_fails_the_call_not_the_worker():
    import corral
    from conftest import fixture_ref

    with corral.Worker(fixture_ref("supervised:Crashy"), max_frame=1 << 20) as w:
        pid = w.pid
        # A str crosses in the frame, not in shared memory: too big for the limit.
        with pytest.raises(ValueError, match="exceeds the frame limit"):
            w.call("echo", "x" * (2 << 20))  # refused on the host, before sending
        with pytest.raises(corral.RemoteError, match="FrameTooLarge.*exceeds the frame limit"):
            w.call("make_str", 2 << 20)  # refused in the worker: that call fails
        with pytest.raises(corral.RemoteError, match="FrameTooLarge.*exceeds the frame limit"):
            list(w.stream("make_str_chunks", 2 << 20))
        assert w.call("pid") == pid and w.health().restarts == 0
