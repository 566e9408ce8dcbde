"""What bench_ray.py runs on the nodes: the same methods as a corral target and as a bare
Ray actor (``BareActor``, made a Ray actor by the benchmark), so both do the same work."""

import time


class Model:
    def noop(self):
        """Do nothing: the cost of a call."""

    def total(self, arr) -> float:
        """Read every byte of the array (a sum), return one float."""
        return float(arr.sum())

    def twice(self, arr):
        return arr * 2

    def wait(self, seconds: float) -> None:
        """Sleep: a call whose work takes ``seconds`` (throughput by workers)."""
        time.sleep(seconds)


class BareActor(Model):
    """The baseline: the same methods, called as a Ray actor's methods."""
