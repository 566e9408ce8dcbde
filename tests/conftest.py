import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")


def fixture_ref(name: str) -> str:
    """A target reference to tests/fixtures/<file>.py:<Name>."""
    file, _, attr = name.partition(":")
    return f"{os.path.join(FIXTURES, file)}.py:{attr}"


def open_fds() -> set[str]:
    """What this process has open, by target (sockets show as socket:[inode])."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass  # the listing's own descriptor
    return out


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail the test if it does not within ``timeout``.
    For state that has no event to wait on (another process's state, a worker's status)."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)


@pytest.fixture
def basic():
    import corral

    with corral.Worker(fixture_ref("basic:Basic")) as w:
        yield w


def live_descendants(pid: int | None = None) -> list:
    """The running (not zombie) descendants of ``pid`` (default: this process). A process
    that ends between the listing and the status check is simply not running: the race
    with an exiting worker must not fail the test that waits for it to exit."""
    import psutil

    live = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                live.append(p)
        except psutil.NoSuchProcess:
            pass
    return live


def _our_children() -> list:
    return live_descendants()


@pytest.fixture(autouse=True)
def no_leftovers():
    """Every test must leave no worker process and no shared-memory segment behind."""
    before = {p.pid for p in _our_children()}
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    yield
    import psutil

    leftover = []
    for p in _our_children():
        if p.pid in before:
            continue
        try:  # do not let one test's leak fail the next ones too
            leftover.append(p.cmdline())
            p.kill()
        except psutil.Error:
            pass  # it ended on its own meanwhile
    assert not leftover, f"test left processes running: {leftover}"
    if os.path.isdir("/dev/shm"):
        new = {n for n in set(os.listdir("/dev/shm")) - shm_before if "corral" in n}
        assert not new, f"test left shared memory segments: {new}"


sys.path.insert(0, HERE)
