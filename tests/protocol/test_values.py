"""The value codec (``corral.protocol.values``) and the message codec, as properties.

Every supported value must come back *exactly*: same types all the way down (a tuple stays
a tuple, 1.0 never becomes 1, -0.0 keeps its sign, a NaN keeps its bits), and every
message of ``protocol.messages`` must survive its direction's encoder/decoder pair.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import pathlib
import pickle
import struct
import uuid
import zoneinfo
from typing import Any, get_args

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from corral.protocol import messages as m, values as V
from corral.protocol.values import (
    args_to_wire,
    encode_value,
    from_wire_bytes,
    make_decoder,
    make_encoder,
    to_wire,
)

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=_HEALTH)
#: For tests that draw several nested values per example (generation dominates their time).
NESTED = settings(max_examples=50, deadline=None, suppress_health_check=_HEALTH)

Ext = msgspec.msgpack.Ext


# ---- exact comparison ------------------------------------------------------------------


def _float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _tz_id(tz: Any) -> Any:
    """What identifies a tzinfo on the wire: a zone key, a fixed offset, or nothing."""
    if tz is None:
        return None
    if isinstance(tz, zoneinfo.ZoneInfo):
        return ("zone", tz.key)
    return (type(tz).__name__, tz.utcoffset(None))


def _array_contents(a: np.ndarray) -> Any:
    """The array's values bit for bit, field by field (padding between fields is not data:
    numpy does not even copy it)."""
    if a.dtype.names:
        return tuple((n, _array_contents(a[n])) for n in a.dtype.names)
    return np.ascontiguousarray(a).tobytes()


def canon(v: Any) -> Any:
    """A type-tagged, comparable form of ``v``: equal canon <=> exactly the same value."""
    t = type(v)
    name = f"{t.__module__}.{t.__qualname__}"
    if t is float:
        return (name, _float_bits(v))
    if t is complex:
        return (name, _float_bits(v.real), _float_bits(v.imag))
    if t in (int, bool, str, bytes, bytearray, type(None), uuid.UUID, dt.date, dt.timedelta):
        return (name, bytes(v) if t is bytearray else v)
    if t is decimal.Decimal:
        return (name, str(v))  # sNaN cannot even be compared with ==
    if t is dt.datetime:
        return (name, v.replace(tzinfo=None).isoformat(), v.fold, _tz_id(v.tzinfo),
                v.utcoffset())
    if t is dt.time:
        return (name, v.replace(tzinfo=None).isoformat(), v.fold, _tz_id(v.tzinfo))
    if isinstance(v, pathlib.PurePath):
        return (name, str(v))
    if t in (list, tuple):
        return (name, tuple(canon(x) for x in v))
    if t in (set, frozenset):
        return (name, tuple(sorted(repr(canon(x)) for x in v)))
    if t is dict:
        return (name, tuple((canon(k), canon(x)) for k, x in v.items()))
    if isinstance(v, np.ndarray):
        return (name, v.dtype.descr, v.dtype.str, v.shape, _array_contents(v))
    if isinstance(v, np.generic):
        return (name, v.dtype.descr, v.dtype.str, _array_contents(np.array(v)))
    if isinstance(v, msgspec.Struct):
        return (name, tuple(canon(getattr(v, f)) for f in v.__struct_fields__))
    raise AssertionError(f"canon(): no rule for {name}")


def assert_exact(a: Any, b: Any, path: str = "value") -> None:
    """Assert ``b`` is exactly ``a``: same type at every level and the same value (floats
    compared bit for bit, dicts in order, Decimals by text, arrays by dtype/shape/bytes)."""
    assert type(a) is type(b), f"{path}: {type(a).__qualname__} came back as {type(b).__qualname__}"
    t = type(a)
    if t in (list, tuple):
        assert len(a) == len(b), f"{path}: length {len(a)} came back as {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_exact(x, y, f"{path}[{i}]")
    elif t is dict:
        assert len(a) == len(b), f"{path}: {len(a)} items came back as {len(b)}"
        for i, ((ka, va), (kb, vb)) in enumerate(zip(a.items(), b.items())):
            assert_exact(ka, kb, f"{path}.keys()[{i}]")
            assert_exact(va, vb, f"{path}[{ka!r}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.dtype.str == b.dtype.str, \
            f"{path}: dtype {a.dtype!r} came back as {b.dtype!r}"
        assert a.dtype.descr == b.dtype.descr, f"{path}: descr {a.dtype.descr} != {b.dtype.descr}"
        assert a.shape == b.shape, f"{path}: shape {a.shape} came back as {b.shape}"
        assert _array_contents(a) == _array_contents(b), f"{path}: array contents differ"
    elif isinstance(a, msgspec.Struct):
        for f in a.__struct_fields__:
            assert_exact(getattr(a, f), getattr(b, f), f"{path}.{f}")
    else:
        assert canon(a) == canon(b), f"{path}: {a!r} came back as {b!r}"


def roundtrip(v: Any, allow_pickle: bool = False) -> Any:
    return from_wire_bytes(encode_value(v, allow_pickle=allow_pickle), allow_pickle=allow_pickle)


def test_assert_exact_catches_lookalikes():
    for a, b in [((1,), [1]), (1, 1.0), (True, 1), (0.0, -0.0), ({1}, frozenset({1})),
                 (b"x", bytearray(b"x")), ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
                 (decimal.Decimal("1.0"), decimal.Decimal("1.00")),
                 (np.zeros(2, "<i4"), np.zeros(2, ">i4")), (np.zeros((2, 1)), np.zeros((1, 2))),
                 (pathlib.PurePosixPath("a"), pathlib.PureWindowsPath("a")),
                 (dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
                  dt.datetime(2020, 1, 1, tzinfo=zoneinfo.ZoneInfo("UTC"))),
                 (dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1, fold=1)),
                 ({1, 2}, {1, 2.0}), (np.float32(1), np.float64(1))]:
        with pytest.raises(AssertionError):
            assert_exact(a, b)


# ---- strategies ------------------------------------------------------------------------

big_ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.sampled_from([-(2**63) - 1, -(2**63), -(2**63) + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
                     2**64 + 1, -(2**64), 10**100, -(10**100)]),
)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, 5e-324, 1.7976931348623157e308]),
    # NaNs with payloads: every bit must survive
    st.integers(min_value=0, max_value=2**52 - 1).map(
        lambda p: struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001 | p | (p & 1) << 63))[0]),
)
fixed_offsets = st.integers(min_value=-(24 * 3600 - 1), max_value=24 * 3600 - 1).map(
    lambda s: dt.timezone(dt.timedelta(seconds=s)))
# Offsets under one second in size are left out: CPython 3.11's fromisoformat reads
# "+00:00:00.000001" as UTC (a CPython quirk, not corral's; nobody lives at such offsets).
fixed_offsets_us = st.timedeltas(min_value=dt.timedelta(hours=-23, minutes=-59),
                                 max_value=dt.timedelta(hours=23, minutes=59)).filter(
    lambda td: abs(td) >= dt.timedelta(seconds=1)).map(dt.timezone)
tzinfos = st.one_of(st.none(), st.just(dt.timezone.utc), fixed_offsets, fixed_offsets_us,
                    st.timezones())
datetimes = st.builds(lambda d, fold: d.replace(fold=fold),
                      st.datetimes(timezones=tzinfos), st.sampled_from([0, 1]))
times = st.builds(lambda t, fold: t.replace(fold=fold),
                  st.times(timezones=st.one_of(st.none(), st.just(dt.timezone.utc),
                                               fixed_offsets, fixed_offsets_us, st.timezones())),
                  st.sampled_from([0, 1]))
decimals = st.one_of(st.decimals(allow_nan=True, allow_infinity=True),
                     st.sampled_from([decimal.Decimal(s) for s in
                                      ("NaN", "-NaN", "sNaN", "NaN123", "-0", "0E-30", "1.000",
                                       "-Infinity", "1E+999999", "12345678901234567890.0987654321")]))
path_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
paths = st.one_of(path_text.map(pathlib.PurePosixPath), path_text.map(pathlib.PureWindowsPath),
                  path_text.map(pathlib.Path))
np_scalars = st.one_of(hnp.scalar_dtypes(), hnp.integer_dtypes(endianness=">")).flatmap(
    lambda d: hnp.from_dtype(d).map(lambda x: np.array(x, d)[()]))

array_dtypes = st.one_of(
    hnp.scalar_dtypes(),
    hnp.integer_dtypes(endianness=">"), hnp.floating_dtypes(endianness=">"),
    hnp.complex_number_dtypes(endianness=">"),
    hnp.byte_string_dtypes(), hnp.unicode_string_dtypes(endianness="<"),
    hnp.unicode_string_dtypes(endianness=">"),
    hnp.array_dtypes(allow_subarrays=True),
    hnp.nested_dtypes(max_itemsize=64),
).filter(lambda d: not _no_buffer(d))  # see test_arrays_without_a_buffer_format (a bug)


def _no_buffer(d: np.dtype) -> bool:
    """Dtypes numpy cannot export through the buffer protocol: datetime64/timedelta64 and
    field names with ':' (corral currently cannot send those, see the xfail below)."""
    if d.fields:
        return any(":" in n or _no_buffer(f[0]) for n, f in d.fields.items())
    if d.subdtype is not None:
        return _no_buffer(d.subdtype[0])
    return d.kind in "mM"

arrays = hnp.arrays(array_dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))


hashable_leaves = st.one_of(
    st.none(), st.booleans(), big_ints, floats, st.complex_numbers(allow_nan=True),
    st.text(), st.binary(), st.dates(), st.timedeltas(), st.uuids(), paths,
    decimals.filter(lambda d: not d.is_snan()), datetimes, times,
)
hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4).map(tuple),
                            st.frozensets(inner, max_size=4)),
    max_leaves=8,
)
small_arrays = hnp.arrays(array_dtypes, hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
leaves = st.one_of(hashable_leaves, decimals, st.binary().map(bytearray), np_scalars, small_arrays)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(st.text(max_size=5), inner, max_size=5),
        st.dictionaries(hashables, inner, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=25,
)

# ---- value round trips -----------------------------------------------------------------


@SETTINGS
@given(values)
@example([1, 2**64, -(2**63) - 1])
@example({(1, 2): [frozenset({None}), {b"k": -0.0}], None: "x", 1.5: {1j}})
@example(("tuple", ("nested",), [("in", "list")]))
def test_values_round_trip_exactly(v):
    assert_exact(v, roundtrip(v))


@NESTED
@given(st.lists(values, max_size=3), st.dictionaries(st.text(max_size=5), values, max_size=3))
# plain scalars only, up to the edges of msgpack's ints (sent as they are, with no walk),
# and one value past an edge in the arguments or the keywords (the walk replaces it)
@example([2**64 - 1, -(2**63), True, None], {"s": "x", "f": 1.5, "n": None})
@example(["plain", 2**64], {"k": "v"})
@example([], {"a": "x", "b": -(2**63) - 1})
@example([1.0], {"b": b"bytes", "s": "x"})
def test_call_arguments_round_trip_through_a_call_message(args, kwargs):
    wire_args, wire_kwargs = args_to_wire(tuple(args), kwargs)
    frame = make_encoder().encode(m.Call(7, "predict", wire_args, wire_kwargs))
    call = make_decoder(m.HostData).decode(frame)
    assert call.id == 7 and call.method == "predict"
    assert_exact(args, call.args)
    assert_exact(kwargs, call.kwargs)


@SETTINGS
@given(big_ints)
def test_ints_of_any_size(n):
    assert_exact(n, roundtrip(n))
    assert_exact([n, 0], roundtrip([n, 0]))  # the list fast path must not let it through


def test_int_range_edges_pick_the_right_encoding():
    assert to_wire(2**64 - 1) == 2**64 - 1
    assert to_wire(-(2**63)) == -(2**63)
    assert isinstance(to_wire(2**64), Ext) and to_wire(2**64).code == V.BIGINT
    assert isinstance(to_wire(-(2**63) - 1), Ext)
    assert to_wire([True, 2**64 - 1]) == [True, 2**64 - 1]


def test_int_beyond_the_str_digit_limit():
    n = 7**6000
    assert_exact(n, roundtrip(n))


@SETTINGS
@given(floats)
def test_floats_keep_their_bits(x):
    back = roundtrip(x)
    assert type(back) is float
    assert _float_bits(back) == _float_bits(x)


def test_float_specials():
    for x in (0.0, -0.0, math.inf, -math.inf):
        back = roundtrip(x)
        assert back == x and math.copysign(1, back) == math.copysign(1, x)
    assert math.isnan(roundtrip(math.nan))
    assert math.copysign(1, roundtrip(-math.nan)) == -1


@SETTINGS
@given(st.complex_numbers(allow_nan=True, allow_infinity=True))
def test_complex(z):
    assert_exact(z, roundtrip(z))


def test_complex_signed_zeros():
    for z in (complex(-0.0, -0.0), complex(0.0, -0.0), complex(math.nan, -math.inf)):
        assert_exact(z, roundtrip(z))


@SETTINGS
@given(st.one_of(st.text(), st.binary(), st.binary().map(bytearray)))
def test_text_and_bytes(v):
    assert_exact(v, roundtrip(v))


@NESTED
@given(st.dictionaries(hashables, leaves | st.lists(leaves, max_size=3), max_size=6))
def test_dicts_with_any_hashable_keys_keep_key_types_and_order(d):
    assert_exact(d, roundtrip(d))


def test_dict_with_mixed_keys():
    d = {"a": 1, 2: "b", (3, "c"): [4], frozenset({5}): None, None: 6.0, b"k": -0.0,
         True: "bool key", 1.5: {"nested": {7: 8}}}
    assert_exact(d, roundtrip(d))


@SETTINGS
@given(datetimes)
def test_datetimes_naive_and_aware(v):
    assert_exact(v, roundtrip(v))


@SETTINGS
@given(times)
def test_times_naive_and_aware(v):
    assert_exact(v, roundtrip(v))


@SETTINGS
@given(st.dates(), st.timedeltas())
def test_dates_and_timedeltas(d, td):
    assert_exact((d, td), roundtrip((d, td)))


def test_zoneinfo_keeps_its_zone_and_fold():
    ny = zoneinfo.ZoneInfo("America/New_York")
    # 01:30 on 2021-11-07 happens twice in New York: fold picks the second one.
    for fold in (0, 1):
        v = dt.datetime(2021, 11, 7, 1, 30, tzinfo=ny, fold=fold)
        back = roundtrip(v)
        assert_exact(v, back)
        assert back.tzinfo is ny
        assert back.utcoffset() == v.utcoffset()
    assert roundtrip(dt.datetime(2021, 11, 7, 1, 30, tzinfo=ny, fold=1)).utcoffset() == \
        dt.timedelta(hours=-5)


def test_fixed_offsets_with_seconds_and_microseconds():
    tz = dt.timezone(dt.timedelta(hours=-3, seconds=-17, microseconds=-5))
    for v in (dt.datetime(1, 1, 1, tzinfo=tz), dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tz),
              dt.time(12, 0, 0, 1, tzinfo=tz)):
        assert_exact(v, roundtrip(v))


@SETTINGS
@given(decimals)
def test_decimals_keep_exponent_sign_and_nan_kind(d):
    assert_exact(d, roundtrip(d))


@SETTINGS
@given(st.uuids(), paths)
def test_uuids_and_paths(u, p):
    assert_exact([u, p], roundtrip([u, p]))


def test_concrete_path_comes_back_concrete():
    p = pathlib.Path("/tmp/some dir/file.txt")
    back = roundtrip(p)
    assert type(back) is type(p) and back == p
    w = pathlib.PureWindowsPath(r"C:\Users\Me\File.TXT")
    back = roundtrip(w)
    assert type(back) is pathlib.PureWindowsPath and str(back) == str(w)


# ---- numpy -------------------------------------------------------------------------------


@SETTINGS
@given(arrays)
def test_arrays_of_many_dtypes_and_shapes(a):
    b = roundtrip(a)
    assert_exact(a, b)
    assert b.flags.writeable


plain_dtypes = hnp.scalar_dtypes().filter(lambda d: not _no_buffer(d))


@SETTINGS
@given(hnp.arrays(plain_dtypes, hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5)),
       st.data())
def test_non_contiguous_views(a, data):
    slices = tuple(slice(None, None, data.draw(st.sampled_from([1, 2, -1, -2]), label=f"step{i}"))
                   for i in range(a.ndim))
    axes = data.draw(st.permutations(range(a.ndim)), label="axes")
    view = a[slices].transpose(axes)
    assert_exact(view, roundtrip(view))


@SETTINGS
@given(hnp.arrays(plain_dtypes, hnp.array_shapes(min_dims=2, max_dims=4, min_side=2, max_side=4)))
def test_fortran_order_is_kept(a):
    f = np.asfortranarray(a)
    assert f.flags.f_contiguous and not f.flags.c_contiguous
    b = roundtrip(f)
    assert_exact(f, b)
    assert b.flags.f_contiguous
    b[(0,) * b.ndim] = b[(1,) * b.ndim]  # writable, own memory


def test_array_edge_cases():
    cases = [
        np.array(3.5),  # 0-d
        np.array(7, dtype=">i8"),
        np.zeros((0,), "f8"), np.zeros((3, 0, 2), ">c16"), np.zeros((0, 4), "U3", order="F"),
        np.arange(24, dtype=">u4").reshape(2, 3, 4)[:, ::2, ::-1],
        np.arange(24, dtype="<f2").reshape(4, 6).T,
        np.array([np.nan, -0.0, np.inf], dtype=">f4"),
        np.array(["", "x", "日本"], dtype=">U2"),
        np.array([b"", b"\x00\x01"], dtype="S3"),
        np.array([True, False]),
        np.zeros(3, dtype=np.dtype([("a", "u1"), ("b", ">i8"), ("c", "f4", (2, 3))])),
        np.zeros(2, dtype=np.dtype([("outer", [("x", "<i2"), ("y", "U1")]), ("z", "?")])),
        np.ones(2, dtype=np.dtype([("a", "u1"), ("b", "<i8")], align=True)),
        np.zeros(4, dtype="V5"),
        np.arange(12.0).reshape(3, 4)[::2],
    ]
    for a in cases:
        assert_exact(a, roundtrip(a))


@pytest.mark.parametrize("a", [
    np.array(["2020-01-01", "NaT"], dtype="M8[ns]"),
    np.array([1, -2], dtype=">m8[D]"),
    np.array("2020-01-01", dtype="M8[D]"),
    np.zeros(2, dtype=[("when", "M8[s]"), ("x", "i4")]),
    np.zeros(2, dtype=[("a:b", "i4")]),
], ids=["datetime64", "timedelta64-be", "0-d", "structured", "colon-field-name"])
def test_arrays_without_a_buffer_format(a):
    assert_exact(a, roundtrip(a))


@SETTINGS
@given(np_scalars)
def test_numpy_scalars(x):
    assert_exact(x, roundtrip(x))


def test_numpy_scalar_edge_cases():
    rec = np.zeros(1, dtype=[("a", "<i4"), ("b", "S2")])[0]
    for x in (np.float16(-0.0), np.bool_(True), np.str_("hé"), np.bytes_(b"ab"),
              np.datetime64("2020-01-01T00:00:00.123456789"), np.timedelta64("NaT"),
              np.clongdouble(1 + 2j), np.longdouble("1.5"), rec,
              np.array(5, dtype=">i2")[()]):
        assert_exact(x, roundtrip(x))


def test_ndarray_subclasses_are_not_silently_downgraded():
    masked = np.ma.masked_array([1, 2, 3], mask=[False, True, False])
    try:
        back = roundtrip(masked)
    except TypeError:
        return  # refusing it is fine too
    assert type(back) is np.ma.MaskedArray
    assert list(back.mask) == [False, True, False]


# ---- unsupported values ------------------------------------------------------------------


class Opaque:
    pass


def _type_error(fn, *a, **kw) -> str:
    with pytest.raises(TypeError) as info:
        fn(*a, **kw)
    return str(info.value)


def test_unsupported_value_names_type_and_location_in_kwargs():
    msg = _type_error(args_to_wire, (), {"batch": [1, 2, 3, Opaque()]})
    assert f"{__name__}.Opaque" in msg or "Opaque" in msg
    assert "kwargs['batch'][3]" in msg
    assert "allow_pickle" in msg


@pytest.mark.parametrize("args, kwargs, where, type_name", [
    ((object(),), {}, "args[0]", "object"),
    ((1, "x", [0, {"k": (1, 2, lambda: 0)}]), {}, "args[2][1]['k'][2]", "function"),
    ((), {"x": {"y": [None, {1: object()}]}}, "kwargs['x']['y'][1][1]", "object"),
    ((), {"a": 1, "b": ({"c": Ellipsis},)}, "kwargs['b'][0]['c']", "ellipsis"),
    ((), {"s": {frozenset({1}): iter([])}}, "kwargs['s'][frozenset({1})]", "list_iterator"),
    ((np.array([object()], dtype=object),), {}, "args[0]", "numpy.ndarray"),
    ((), {"gen": (i for i in range(2))}, "kwargs['gen']", "generator"),
    ((), {"t": ([1, [2, [3, type]]],)}, "kwargs['t'][0][1][1][1]", "type"),
])
def test_unsupported_locations(args, kwargs, where, type_name):
    msg = _type_error(args_to_wire, args, kwargs)
    assert f"at {where}:" in msg, msg
    assert f"type {type_name} " in msg, msg


def test_unsupported_in_a_plain_value_uses_where():
    msg = _type_error(to_wire, {"a": [Opaque()]}, where="context")
    assert "at context['a'][0]" in msg and f"{__name__}.Opaque" in msg
    assert "at value[2]" in _type_error(encode_value, [1, 2, object()])
    assert "at value['k']" in _type_error(encode_value, {"k": object()})


def test_subclasses_of_plain_types_are_refused_not_downgraded():
    import enum

    class Color(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    assert "Color" in _type_error(encode_value, [Color.RED])
    assert "Name" in _type_error(encode_value, {"k": Name("x")})
    assert "Name" in _type_error(encode_value, {Name("x"): 1})


def test_location_survives_the_fast_paths():
    # lists of plain values skip the walk; the error must still point at the right item
    big = list(range(1000)) + [Opaque()]
    assert "at args[0][1000]" in _type_error(args_to_wire, (big,), {})
    assert "at kwargs['z'][1]" in _type_error(args_to_wire, (1, 2), {"y": "ok", "z": [1.0, Opaque()]})


# ---- pickle -------------------------------------------------------------------------------

_SIDE_EFFECTS: list = []


def _record_side_effect(tag: str) -> str:
    _SIDE_EFFECTS.append(tag)
    return tag


class _Trap:
    def __reduce__(self):
        return (_record_side_effect, ("unpickled!",))


def test_pickle_round_trips_when_allowed():
    v = {"o": Opaque, "arr": np.array([{"x": 1}, None], dtype=object), "t": (Opaque,)}
    back = roundtrip(v, allow_pickle=True)
    assert back["o"] is Opaque and back["t"] == (Opaque,)
    assert back["arr"].dtype == object and back["arr"][0] == {"x": 1}


def test_pickle_ext_is_refused_without_being_run():
    _SIDE_EFFECTS.clear()
    data = encode_value({"evil": _Trap()}, allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        from_wire_bytes(data, allow_pickle=False)
    frame = make_encoder().encode(m.Done(1, Ext(V.PICKLE, pickle.dumps(_Trap())), 0.0))
    with pytest.raises(ValueError, match="pickle"):
        make_decoder(m.WorkerData, allow_pickle=False).decode(frame)
    with pytest.raises(ValueError, match="pickle"):
        make_decoder(m.WorkerData).decode(frame)  # off by default
    assert _SIDE_EFFECTS == []
    # the same frame does unpickle when the Worker opted in
    assert make_decoder(m.WorkerData, allow_pickle=True).decode(frame).value == "unpickled!"
    assert _SIDE_EFFECTS == ["unpickled!"]


def test_unknown_extension_code_is_refused():
    for code in (0, 24, 99, 127, -2, -128):  # -1 is msgpack's own timestamp type
        with pytest.raises(ValueError, match="unknown extension"):
            from_wire_bytes(msgspec.msgpack.encode(Ext(code, b"")))


# ---- message codec -----------------------------------------------------------------------

DIRECTIONS = {"HostControl": m.HostControl, "WorkerControl": m.WorkerControl,
              "HostData": m.HostData, "WorkerData": m.WorkerData}


def _members(union: Any) -> tuple:
    return get_args(union) or (union,)


def _tagged_structs() -> list[type]:
    found = {obj for obj in vars(m).values()
             if isinstance(obj, type) and issubclass(obj, msgspec.Struct)
             and obj.__struct_config__.tag is not None}  # a set: HostData is an alias of Call
    return sorted(found, key=lambda c: c.__struct_config__.tag)


#: Messages that go both ways on the control channel.
BOTH_WAYS = {m.Release}


def test_every_tagged_message_belongs_to_exactly_one_direction():
    seen: dict[type, str] = {}
    for name, union in DIRECTIONS.items():
        for cls in _members(union):
            assert cls not in seen or cls in BOTH_WAYS, \
                f"{cls.__name__} is in {seen[cls]} and {name}"
            seen[cls] = name
    assert set(seen) == set(_tagged_structs())
    tags = [cls.__struct_config__.tag for cls in _tagged_structs()]
    assert len(tags) == len(set(tags)), "message tags must be unique"


small_text = st.text(max_size=12)
config_dicts = st.dictionaries(small_text, values, max_size=4)
error_infos = st.recursive(
    st.builds(m.ErrorInfo, type=small_text, message=small_text, traceback=small_text,
              kind=st.sampled_from(["user", "arguments", "method"])),
    lambda inner: st.builds(m.ErrorInfo, type=small_text, message=small_text,
                            traceback=small_text, cause=st.none() | inner,
                            context=st.none() | inner),
    max_leaves=4,
)
method_infos = st.builds(m.MethodInfo, kind=st.sampled_from(["sync", "async", "generator", "asyncgen"]),
                         signature=small_text, doc=small_text)
ids = st.integers(min_value=1, max_value=2**64 - 1)
finite = st.floats(allow_nan=False)

#: Messages as the receiving side should see them: Any fields hold plain Python values.
MESSAGE_STRATEGIES: dict[type, st.SearchStrategy] = {
    m.Init: st.builds(m.Init, target=st.builds(m.TargetSpec, ref=st.none() | small_text,
                                               pickled=st.none() | st.binary(max_size=32)),
                      config=config_dicts, slots=st.integers(1, 64), allow_pickle=st.booleans()),
    m.Reload: st.builds(m.Reload, seq=ids, config=config_dicts),
    m.Ping: st.builds(m.Ping, seq=ids),
    m.Cancel: st.builds(m.Cancel, id=ids),
    m.Describe: st.builds(m.Describe, seq=ids),
    m.Description: st.builds(m.Description, seq=ids, methods=st.dictionaries(
        st.text(max_size=8), st.builds(m.MethodSchema, input=st.none() | st.just({"type": "object"}),
                                       output=st.none()), max_size=3)),
    m.Shutdown: st.builds(m.Shutdown, grace=st.floats(min_value=0, allow_infinity=True)),
    m.Release: st.builds(m.Release, ids=st.lists(st.integers(min_value=0, max_value=2**63))),
    m.Hello: st.builds(m.Hello, protocol=st.integers(0, 2**32), corral_version=small_text,
                       pid=st.integers(1, 2**22), python=small_text),
    m.Ready: st.builds(m.Ready, seq=st.integers(0, 2**32),
                       target=small_text, methods=st.dictionaries(small_text, method_infos, max_size=3),
                       setup_logs=st.lists(small_text, max_size=3), setup_time=finite),
    m.SetupFailed: st.builds(m.SetupFailed, seq=st.integers(0, 2**32), error=error_infos,
                             setup_logs=st.lists(small_text, max_size=3)),
    m.Pong: st.builds(m.Pong, seq=ids, busy=st.integers(0, 1000)),
    m.WorkerLog: st.builds(m.WorkerLog, stream=st.sampled_from(["stdout", "stderr"]), text=st.text()),
    m.Call: st.builds(m.Call, id=ids, method=small_text, args=st.lists(values, max_size=3),
                      kwargs=config_dicts, context=st.none() | config_dicts,
                      streams=st.none() | st.builds(
                          m.CallStreams, window=st.integers(0, 1 << 20),
                          inputs=st.none() | st.lists(st.lists(st.integers(0, 8) | small_text,
                                                               min_size=2, max_size=2)))),
    m.Credit: st.builds(m.Credit, id=ids, n=st.integers(0, 1 << 20)),
    m.InChunk: st.builds(m.InChunk, id=ids, slot=st.integers(0, 8), value=values),
    m.InEnd: st.builds(m.InEnd, id=ids, slot=st.integers(0, 8)),
    m.InCredit: st.builds(m.InCredit, id=ids, slot=st.integers(0, 8), n=st.integers(0, 1 << 20)),
    m.Log: st.builds(m.Log, id=ids, stream=st.sampled_from(["stdout", "stderr"]), text=st.text()),
    m.Progress: st.builds(m.Progress, id=ids, step=finite, total=st.none() | finite,
                          phase=st.none() | small_text),
    m.Metric: st.builds(m.Metric, id=ids, name=small_text, value=values,
                        mode=st.sampled_from(m.METRIC_MODES)),
    m.Chunk: st.builds(m.Chunk, id=ids, value=values),
    m.Done: st.builds(m.Done, id=ids, value=values, run_time=finite),
    m.Failed: st.builds(m.Failed, id=ids, error=error_infos),
}


def test_message_strategies_cover_every_message():
    assert set(MESSAGE_STRATEGIES) == set(_tagged_structs())


def to_wire_message(msg: Any) -> Any:
    """What the sending side puts on the wire: Any fields go through the value codec."""
    replace = msgspec.structs.replace
    if isinstance(msg, (m.Done, m.Chunk, m.Metric, m.InChunk)):
        return replace(msg, value=to_wire(msg.value))
    if isinstance(msg, m.Call):
        args, kwargs = args_to_wire(tuple(msg.args), msg.kwargs)
        context = None if msg.context is None else to_wire(msg.context, where="context")
        return replace(msg, args=args, kwargs=kwargs, context=context)
    if isinstance(msg, (m.Init, m.Reload)):
        return replace(msg, config=to_wire(msg.config))
    return msg


def _direction_of(cls: type) -> Any:
    for union in DIRECTIONS.values():
        if cls in _members(union):
            return union
    raise AssertionError(cls)


@pytest.mark.parametrize("cls", sorted(MESSAGE_STRATEGIES, key=lambda c: c.__struct_config__.tag),
                         ids=lambda c: c.__name__)
@settings(max_examples=30, deadline=None, suppress_health_check=_HEALTH)
@given(data=st.data())
def test_every_message_round_trips_in_its_direction(cls, data):
    msg = data.draw(MESSAGE_STRATEGIES[cls])
    union = _direction_of(cls)
    frame = make_encoder().encode(to_wire_message(msg))
    back = make_decoder(union).decode(frame)
    assert type(back) is cls
    assert_exact(msg, back)
    # Other directions must not accept it: tags are disjoint.
    for other in DIRECTIONS.values():
        if other is not union and cls not in _members(other):
            with pytest.raises(msgspec.ValidationError):
                make_decoder(other).decode(frame)


def test_messages_are_compact():
    enc = make_encoder().encode
    # (array_like Structs still write trailing defaults: one byte each for the optional
    # context, the piggybacked shared-memory release, the convert flag and the streams)
    assert len(enc(m.Call(1, "predict", [1], {}))) <= 18
    assert len(enc(m.Done(1, 2, 0.001))) <= 16


def test_old_peer_tolerates_new_trailing_fields_and_new_peer_old_messages():
    enc = msgspec.msgpack.encode
    dec = make_decoder(m.HostData)
    # A newer host may append fields: an older worker ignores them.
    call = dec.decode(enc([21, 5, "predict", [1], {"k": 2}, None, None, False, None,
                           "some future field", 3]))
    assert call == m.Call(5, "predict", [1], {"k": 2}, None)
    # An older host omits trailing defaulted fields.
    assert dec.decode(enc([21, 5, "predict", [], {}])).context is None
    done = make_decoder(m.WorkerData).decode(enc([35, 9, (1, 2), 0.5, None, "future"]))
    assert done == m.Done(9, [1, 2], 0.5)
    with pytest.raises(msgspec.ValidationError):
        dec.decode(enc([21, 5, "predict"]))  # required fields missing


@pytest.mark.parametrize("raw", [
    [35, "not an id", None, 0.0],
    [35, 1, None, "slow"],
    [36, 1, ["only type"]],
    [32, 1, "step"],
    [33, 1, "name", 1, 7],
    [31, 1, 2, 3],
    [99, 1],
    [21, 1, "m", [], {}],  # a host message on the worker's data channel
    {"id": 1},
    [],
    None,
])
def test_malformed_worker_messages_raise_validation_errors(raw):
    with pytest.raises(msgspec.ValidationError):
        make_decoder(m.WorkerData).decode(msgspec.msgpack.encode(raw))
