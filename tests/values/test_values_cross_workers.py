"""Every common value crosses host -> worker -> host exactly, through a real worker."""

import datetime as dt
import decimal
import math
import pathlib
import uuid
import zoneinfo

import numpy as np
import pytest

import corral
from conftest import fixture_ref
from fixtures.value_types import Box, Color, Perm, Point

VALUES = [
    None, True, False, 0, -1, 2**63 - 1, 2**64 - 1, -(2**63), 2**200, -(2**300) + 7,
    1.5, math.inf, -math.inf, -0.0, 1 + 2j, "", "héllo ☃", b"", b"\x00\xff", bytearray(b"ab"),
    [], [1, [2, [3]]], (), (1, (2, (3,))), {1, 2}, frozenset({"a"}), {}, {"a": {"b": []}},
    {1: "int key", (1, 2): "tuple key", None: 0, frozenset({1}): 2},
    dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
    dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
    dt.datetime(2024, 3, 31, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    dt.date(1999, 12, 31), dt.time(23, 59, 1, 5), dt.timedelta(days=-2, microseconds=3),
    decimal.Decimal("3.1415926535897932384626433832795028841971"), decimal.Decimal("-0"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    pathlib.Path("/tmp/some file"), pathlib.PurePosixPath("a/b"),
    Color.GREEN, Perm.R | Perm.W, Point(1.0, -2.5, ("x",)),
    Box("b", [Point(0, 0)], Color.GREEN), corral.File("/etc/hostname", content_type="text/plain"),
    np.float32(1.5), np.int8(-3), np.bool_(True), np.complex64(1 - 1j),
    np.datetime64("2024-01-01T00:00:00.123", "ms"),
]


def assert_exact(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    elif isinstance(a, float):
        assert a == b and math.copysign(1, a) == math.copysign(1, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_exact(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_exact(a[k], b[k])
    elif isinstance(a, dt.datetime):
        assert a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset()
    else:
        assert a == b


TESTS_DIR = str(pathlib.Path(__file__).resolve().parent.parent)


@pytest.fixture(scope="module")
def values_worker():
    # The worker imports fixtures.value_types (for Enum/dataclass/Struct values) as the
    # host does: with the tests directory on its path.
    with corral.Worker(fixture_ref("value_types:Values"), env={"PYTHONPATH": TESTS_DIR}) as w:
        yield w


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_value_round_trips_exactly(values_worker, value):
    assert_exact(value, values_worker.call("echo", value))


def test_nan_round_trips(values_worker):
    assert math.isnan(values_worker.call("echo", math.nan))


def test_the_worker_sees_the_real_types(values_worker):
    assert values_worker.call("type_name", (1,)) == "builtins.tuple"
    assert values_worker.call("type_name", Point(1, 2)).endswith("value_types.Point")
    assert values_worker.call("type_name", np.int16(3)) == "numpy.int16"


ARRAYS = [
    np.arange(12, dtype=np.int64).reshape(3, 4),
    np.arange(12.0).reshape(3, 4)[:, ::2],           # not contiguous
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),  # Fortran order
    np.array(5.0),                                    # 0-d
    np.zeros((0, 3), dtype=np.float32),               # empty
    np.array([True, False]),
    np.array([1 + 2j], dtype=np.complex128),
    np.array(["2020-01-01", "NaT"], dtype="M8[s]"),
    np.array([1, 2], dtype="m8[ms]"),
    np.array([1.0, 2.0], dtype=">f8"),                # big-endian
    np.zeros(2, dtype=[("a", "<i4"), ("b", ">f8", (2,)), ("c", "U3")]),  # structured
    np.array(["ab", "c"], dtype="U2"),
]


@pytest.mark.parametrize("arr", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
@pytest.mark.parametrize("size", ["small", "big"])
def test_arrays_round_trip_in_band_and_through_shared_memory(values_worker, arr, size):
    if size == "big":  # above the out-of-band threshold: shared memory
        reps = max(1, (128 * 1024) // max(arr.nbytes, 1) + 1)
        arr = np.concatenate([arr.reshape(-1)] * reps) if arr.ndim else arr
    back = values_worker.call("echo", arr)
    assert type(back) is np.ndarray
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr, equal_nan=arr.dtype.kind in "fc") or (
        arr.dtype.kind in "mM" and (back.view("i8") == arr.view("i8")).all())
    if arr.flags.f_contiguous and not arr.flags.c_contiguous:
        assert back.flags.f_contiguous


def test_unsupported_value_names_type_and_place(values_worker):
    with pytest.raises(TypeError, match=r"type object at kwargs\['batch'\]\[3\]"):
        values_worker.call("echo", value=None, batch=[0, 1, 2, object()])
    with pytest.raises(TypeError, match=r"lock at args\[0\]\['x'\]"):
        import threading

        values_worker.call("echo", {"x": threading.Lock()})


def test_local_types_are_refused_clearly(values_worker):
    import dataclasses

    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(TypeError, match="inside a function"):
        values_worker.call("echo", Local(1))


def test_host_never_imports_a_module_a_worker_names(tmp_path):
    (tmp_path / "sneaky_types.py").write_text(
        "import enum\nclass E(enum.Enum):\n    A = 1\n")
    (tmp_path / "t.py").write_text(
        "import sneaky_types\nclass T:\n    def get(self):\n        return sneaky_types.E.A\n")
    with corral.Worker(f"{tmp_path}/t.py:T") as w:
        with pytest.raises(corral.ProtocolError, match="not known here"):
            w.call("get")


def test_file_crosses_by_path(values_worker, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"\x00payload")
    f = corral.File(path, name="upload.bin", content_type="application/octet-stream")
    assert values_worker.call("read_file", f) == b"\x00payload"
    assert values_worker.call("echo", f) == f


def test_an_argument_the_worker_cannot_rebuild_fails_the_call_not_the_worker():
    with corral.Worker(fixture_ref("value_types:Values")) as w:  # tests/ not on its path
        with pytest.raises(corral.RemoteError, match="cannot decode the arguments"):
            w.call("echo", Color.RED)
        assert w.call("echo", 5) == 5


def test_pickle_is_opt_in_and_local_only():
    class Thing:
        def __init__(self):
            self.v = 3

    with corral.Worker(fixture_ref("value_types:Values")) as w:
        with pytest.raises(TypeError, match="allow_pickle=True"):
            w.call("echo", Thing())
    with corral.Worker(fixture_ref("value_types:Values"), allow_pickle=True) as w:
        assert w.call("echo", Thing()).v == 3
