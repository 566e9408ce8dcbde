"""Fuzz the host's inbound path: frame reader, then the typed message decoder with its
extension hook, then a real Connection routing the result to a waiting call.

Runs as ordinary (bounded) hypothesis tests under pytest. With atheris installed, the same
target runs coverage-guided and unbounded::

    python tests/protocol/test_fuzz_frames.py [corpus_dir] [-max_total_time=60]

What must hold for *any* bytes a worker sends: decoding yields messages or raises an
ordinary ``Exception`` (the host turns it into ProtocolError), never hangs, never allocates
more than the frame limit, and a Connection fails its calls instead of leaving them waiting.
"""

from __future__ import annotations

import datetime as dt
import decimal
import pathlib
import socket
import struct
import sys
import threading
import uuid
from concurrent.futures import TimeoutError as FutureTimeout

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from corral.exceptions import ProtocolError, RemoteError, WorkerCrashed, make_remote_error
from corral.protocol import messages as m, values as V
from corral.protocol.framing import HEADER, FrameError, FrameReader
from corral.protocol.values import make_decoder, make_encoder, to_wire

TIMEOUT = 10.0
MAX_FRAME = 1 << 20
Ext = msgspec.msgpack.Ext
_enc = make_encoder().encode

#: What a decoder is designed to raise for bad input.
DECODE_ERRORS = (FrameError, msgspec.MsgspecError, ValueError)
#: What the extension hook also lets escape for malformed payloads (see
#: test_malformed_ext_payloads_raise_value_error below). The host catches them all.
EXT_HOOK_LEAKS = (TypeError, KeyError, ArithmeticError, struct.error, RecursionError)
ALLOWED = DECODE_ERRORS + EXT_HOOK_LEAKS


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def _seed_values() -> list:
    import numpy as np

    return [
        None, 1, -(2**63), 2**64 - 1, 1.5, "text", b"bytes", [1, [2, "x"]], {"k": [None]},
        (1, (2,)), {1, 2}, frozenset({"a"}), 2**100, -(2**70), 1 + 2j, {(1, 2): "t", None: 0},
        bytearray(b"ba"), dt.datetime(2021, 11, 7, 1, 30, fold=1),
        dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.date(2020, 2, 29), dt.time(1, 2, 3, 4), dt.timedelta(days=-1, microseconds=5),
        decimal.Decimal("-1.50"), uuid.UUID(int=7), pathlib.PurePosixPath("/a/b"),
        pathlib.PureWindowsPath("C:/x"), np.arange(6, dtype=">i4").reshape(2, 3),
        np.asfortranarray(np.ones((2, 2))), np.zeros(2, dtype=[("a", "u1"), ("b", "<f8")]),
        np.float32(2.5), np.array(3), np.zeros((0, 3)),
    ]


def _seed_messages() -> list:
    info = m.ErrorInfo("builtins.ValueError", "bad", "Traceback...",
                       cause=m.ErrorInfo("builtins.KeyError", "k"))
    msgs = [m.Log(1, "stdout", "line"), m.Progress(1, 0.5, 1.0, "load"),
            m.Metric(1, "loss", 0.25, "append"), m.Chunk(1, [1, 2]), m.Done(1, None, 0.0),
            m.Failed(1, info), m.Done(2, "other call", 0.1)]
    msgs += [m.Done(1, to_wire(v), 0.0) for v in _seed_values()]
    return msgs


SEED_BODIES = [_enc(x) for x in _seed_messages()]
EXT_CODES = sorted(v for k, v in vars(V).items() if k.isupper() and isinstance(v, int)
                   and 0 < v < 64)


# ---- the target ------------------------------------------------------------------------


def _feed(data: bytes) -> tuple[socket.socket, threading.Thread]:
    """A socket whose peer (a thread) writes ``data`` and then closes its end."""
    a, b = socket.socketpair()
    b.settimeout(TIMEOUT)  # a reader waiting for bytes that never come fails, never hangs

    def write() -> None:
        try:
            a.sendall(data)
        except OSError:
            pass  # the reader gave up first
        finally:
            a.close()

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return b, t


def decode_all(data: bytes) -> tuple[list, BaseException | None]:
    """The fuzz target: every frame in ``data``, decoded as the host's data channel does."""
    sock, writer = _feed(data)
    try:
        reader = FrameReader(sock, MAX_FRAME)
        decode = make_decoder(m.WorkerData).decode
        msgs: list = []
        try:
            while (f := reader.read()) is not None:
                msgs.append(decode(f))
        except socket.timeout:
            raise AssertionError("the reader hung on a closed stream") from None
        except Exception as exc:  # noqa: BLE001 - judged by the caller
            return msgs, exc
        return msgs, None
    finally:
        sock.close()
        writer.join(TIMEOUT)


def check(data: bytes) -> None:
    msgs, error = decode_all(data)
    assert all(type(x) in m.WorkerData.__args__ for x in msgs)
    if error is not None and not isinstance(error, ALLOWED):
        raise AssertionError(f"decoding raised {type(error).__name__}: {error}") from error


# ---- inputs ------------------------------------------------------------------------------


@st.composite
def mutated_streams(draw) -> bytes:
    """Streams of valid frames (messages carrying every extension type), then mutated."""
    bodies = draw(st.lists(st.sampled_from(SEED_BODIES) | st.binary(max_size=24), max_size=5))
    data = bytearray(b"".join(frame(x) for x in bodies))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "header"]))
        pos = draw(st.integers(0, len(data))) if data else 0
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(data):
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC1, 0xC7, 0xD4, 0xDC, 0xFF]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        elif op == "header":
            size = draw(st.sampled_from([0, 1, 255, MAX_FRAME, MAX_FRAME + 1, 2**32 - 1]))
            data[pos:pos] = HEADER.pack(size)
    return bytes(data)


msgpack_trees = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=12)
    | st.sampled_from(["2020-01-01", "12:30", "UTC", "Europe/Paris", "../etc/passwd", "",
                       "PurePosixPath", "PureWindowsPath", "<i4", ">f8", "|V3", "C", "F",
                       "NaN", "sNaN", "1e999999999", "-0"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def ext_payloads(draw) -> tuple[int, bytes]:
    """An extension value with a payload that is random, or msgpack of the wrong shape."""
    code = draw(st.sampled_from(EXT_CODES + [0, 18, 100]))
    kind = draw(st.sampled_from(["raw", "tree", "numpy"]))
    if kind == "raw":
        payload = draw(st.binary(max_size=64))
    elif kind == "tree":
        payload = _enc(draw(msgpack_trees))
    else:  # a numpy header (length-prefixed msgpack) followed by raw bytes
        header = _enc(draw(st.lists(msgpack_trees, max_size=4)))
        n = draw(st.sampled_from([len(header), 0, len(header) + 3, 2**31]))
        payload = V._HEADER_LEN.pack(n) + header + draw(st.binary(max_size=48))
    return code, payload


def done_frame(code: int, payload: bytes) -> bytes:
    return frame(_enc(m.Done(1, Ext(code, payload), 0.0)))


# ---- bounded runs under pytest -------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.binary(max_size=4096))
@example(b"")
@example(HEADER.pack(2**32 - 1))
@example(frame(b"\xc1"))
def test_fuzz_raw_bytes(data):
    check(data)


@FUZZ
@given(mutated_streams())
def test_fuzz_mutated_valid_streams(data):
    check(data)


@FUZZ
@given(ext_payloads())
def test_fuzz_extension_payloads(ext):
    check(done_frame(*ext))


def test_seed_messages_decode():
    msgs, error = decode_all(b"".join(frame(x) for x in SEED_BODIES))
    assert error is None and len(msgs) == len(SEED_BODIES)


def test_deeply_nested_extensions_fail_cleanly():
    v: object = 1
    for _ in range(50_000):
        v = Ext(V.TUPLE, _enc(v))  # each level is a separate decode inside the ext hook
    _, error = decode_all(frame(_enc(m.Done(1, v, 0.0))))
    assert isinstance(error, (RecursionError, ValueError))  # either way: no crash, no hang


@pytest.mark.parametrize("code, payload", [
    (V.COMPLEX, _enc(1)),                                  # TypeError: cannot unpack
    (V.DICT, _enc([[[1], 2]])),                            # TypeError: unhashable key
    (V.TIMEDELTA, _enc([10**10, 0, 0])),                   # OverflowError
    (V.DECIMAL, b"abc"),                                   # decimal.InvalidOperation
    (V.DATETIME, _enc(["2020-01-01", "No/Such_Zone", 0])),  # ZoneInfoNotFoundError (KeyError)
    (V.PATH, _enc(["PurePosixPath", 5])),                  # TypeError
    (V.NDARRAY, b""),                                      # struct.error
])
def test_malformed_ext_payloads_raise_value_error(code, payload):
    _, error = decode_all(done_frame(code, payload))
    assert isinstance(error, DECODE_ERRORS), type(error)


# ---- the same bytes through a real Connection ----------------------------------------------


def run_connection(data: bytes, channel: str,
                   make_error=lambda sink, info: make_remote_error(info)) -> object:
    """Start a real host Connection, make call 1, have the 'worker' write ``data`` on
    ``channel`` and hang up; return the call's outcome (its value or its exception)."""
    from corral.host.calls import CallFuture
    from corral.host.connection import Connection

    control, worker_control = socket.socketpair()
    data_sock, worker_data = socket.socketpair()
    fds, worker_fds = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    broken: list = []

    def on_broken(error):
        broken.append(error)
        return error if error is not None else WorkerCrashed("worker hung up")

    conn = Connection(control, data_sock, fds, window=4, allow_pickle=False,
                      oob_threshold=64 * 1024, max_frame=MAX_FRAME,
                      on_worker_log=lambda stream, text: None, on_broken=on_broken,
                      make_error=make_error)
    try:
        conn.start(0)
        fut = CallFuture(1, "predict", False)
        conn.submit(1, _enc(m.Call(1, "predict", [], {})), fut)
        peer = worker_data if channel == "data" else worker_control
        try:
            peer.sendall(data)
        except OSError:
            pass
        if channel == "control":
            # Let the control reader judge everything first (it stops at a bad message or
            # at the end of the stream); only then end the data channel too, which would
            # otherwise race it to report first.
            worker_control.close()
            control_reader = conn._threads[1]
            assert control_reader.name.startswith("corral-control")
            control_reader.join(TIMEOUT)
            assert not control_reader.is_alive()
        worker_data.close()  # the worker is gone
        worker_control.close()
        worker_fds.close()
        try:
            outcome = fut.result(TIMEOUT)
        except FutureTimeout:
            raise AssertionError("the call was left waiting") from None
        except BaseException as exc:  # noqa: BLE001
            outcome = exc
        assert len(broken) <= 1
        return outcome
    finally:
        conn.close(WorkerCrashed("stopped"))
        control.close()
        data_sock.close()
        fds.close()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(mutated_streams(), ext_payloads().map(lambda e: done_frame(*e)),
                 st.binary(max_size=256)),
       st.sampled_from(["data", "control"]))
def test_fuzz_connection_never_leaves_a_call_waiting(data, channel):
    outcome = run_connection(data, channel)
    assert isinstance(outcome, (ProtocolError, WorkerCrashed, RemoteError)) \
        or not isinstance(outcome, BaseException), repr(outcome)


def test_connection_outcomes():
    ok = frame(_enc(m.Done(1, "v", 0.0)))
    assert run_connection(ok, "data") == "v"
    assert isinstance(run_connection(b"", "data"), WorkerCrashed)
    assert isinstance(run_connection(frame(b"\xc1"), "data"), ProtocolError)
    assert isinstance(run_connection(done_frame(V.COMPLEX, _enc(1)), "data"), ProtocolError)
    assert isinstance(run_connection(frame(_enc(m.Done(99, None, 0.0))), "data"), ProtocolError)
    assert isinstance(run_connection(frame(_enc(m.Pong(5, 0))), "control"), ProtocolError)
    failed = frame(_enc(m.Failed(1, m.ErrorInfo("builtins.ValueError", "x"))))
    assert isinstance(run_connection(failed, "data"), ValueError)


def test_a_call_ends_even_when_building_its_error_raises():
    def broken(sink, info):
        raise RuntimeError("a bug in building the error")

    failed = frame(_enc(m.Failed(1, m.ErrorInfo("builtins.MemoryError", "", "tb"))))
    outcome = run_connection(failed, "data", make_error=broken)
    assert isinstance(outcome, RemoteError) and outcome.type_name == "builtins.MemoryError"


def test_a_value_of_an_unknown_type_fails_its_call_with_undecodable_value():
    from corral.exceptions import UndecodableValue

    obj = msgspec.msgpack.Ext(V.OBJECT, _enc(["dataclass", "no_such_module", "T", {"x": 1}]))
    outcome = run_connection(frame(_enc(m.Done(1, [obj], 0.0))), "data")
    assert isinstance(outcome, UndecodableValue), repr(outcome)
    assert outcome.type_name == "no_such_module.T" and outcome.where == "the result[0]"


# ---- atheris ---------------------------------------------------------------------------------


def fuzz_one_input(data: bytes) -> None:
    check(data)


def main(argv: list[str] | None = None) -> None:
    """Coverage-guided fuzzing with atheris (``pip install atheris``)."""
    import atheris  # optional: only for coverage-guided fuzzing

    atheris.Setup(list(argv if argv is not None else sys.argv), fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
