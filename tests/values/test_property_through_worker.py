"""Hypothesis generates nested values; each crosses a real worker and back exactly."""

import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import corral
from conftest import fixture_ref
from values.test_values_cross_workers import TESTS_DIR, assert_exact

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False), st.complex_numbers(allow_nan=False), st.text(max_size=20),
    st.binary(max_size=40), st.builds(bytearray, st.binary(max_size=10)),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())), st.dates(), st.times(),
    st.timedeltas(), st.decimals(allow_nan=False), st.uuids(),
    st.builds(pathlib.PurePosixPath, st.text(alphabet="abc/", max_size=10)),
    hnp.arrays(st.sampled_from(["i1", "<u4", ">i8", "f4", ">f8", "c8", "?", "M8[s]"]),
               hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)),
)
hashables = st.one_of(st.integers(), st.text(max_size=8), st.tuples(st.integers()),
                      st.frozensets(st.integers(), max_size=3))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=6), inner, max_size=4),
        st.dictionaries(hashables, inner, max_size=3),
        st.sets(hashables, max_size=4), st.frozensets(hashables, max_size=3)),
    max_leaves=12)


@pytest.fixture(scope="module")
def echo_worker():
    with corral.Worker(fixture_ref("value_types:Values"), env={"PYTHONPATH": TESTS_DIR}) as w:
        yield w


def _exact(a, b):
    if isinstance(a, np.ndarray):
        assert type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == np.ascontiguousarray(b).tobytes()
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _exact(x, y)
    elif isinstance(a, dict):
        assert type(b) is dict and list(a) == list(b)
        for k in a:
            _exact(a[k], b[k])
    else:
        assert_exact(a, b)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=values)
def test_nested_values_cross_exactly(echo_worker, value):
    _exact(value, echo_worker.call("echo", value))
