"""One Ray cluster per test module (a head and two worker nodes on this machine: ~1.2 GB
and several seconds to start), shared by its tests. Node A offers tags a and shared, node
B tags b, shared and lossy, and one unit of the custom resource ``slot``. Tests that
remove a node add their own first."""

import os

import psutil
import pytest

import corral.ray

NODE_A = {"num_cpus": 4, "resources": corral.ray.tag_resources(["a", "shared"])}
NODE_B = {"num_cpus": 4, "resources": {**corral.ray.tag_resources(["b", "shared", "lossy"]),
                                       "slot": 1}}


def _descendants() -> list:
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:  # ended meanwhile
            pass
    return found


def _corral_workers() -> list:
    found = []
    for p in _descendants():
        try:
            if any("corral.worker" in part for part in p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def cluster():
    """The module's cluster; at its end every Ray process is gone."""
    from conftest import wait_until

    before = {p.pid for p in _descendants()}
    with corral.ray.local_cluster([NODE_A, NODE_B]) as c:
        yield c
    wait_until(lambda: not [p for p in _descendants() if p.pid not in before], 30,
               "every Ray process of the cluster to end")


@pytest.fixture(autouse=True)
def no_leftovers():
    """(Overrides the suite's: the cluster's own processes live across tests.) Every test
    must leave no corral worker process and no corral shared-memory segment behind."""
    from conftest import wait_until

    before = {p.pid for p in _corral_workers()}
    shm_before = set(os.listdir("/dev/shm"))
    yield
    # An actor ended by stop() takes its model process down with it a moment later (its
    # keeper sees the actor go).
    def left() -> list:
        return [p for p in _corral_workers() if p.pid not in before]

    try:
        wait_until(lambda: not left(), 15, "the corral worker processes of the test to end")
    except AssertionError:
        raise AssertionError(f"test left processes running: "
                             f"{[(p.pid, p.cmdline()) for p in left()]}") from None
    new = {n for n in set(os.listdir("/dev/shm")) - shm_before if "corral" in n}
    assert not new, f"test left shared memory segments: {new}"
