"""A hypothesis state machine drives a real Worker through random lifecycles.

The contract (as in cog's WorkerStateMachine): every operation either raises InvalidState,
because the worker is not in a state that allows it, or does exactly what was asked.
"""

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import corral
from conftest import fixture_ref


class WorkerLifecycle(RuleBasedStateMachine):
    @initialize()
    def make(self):
        self.worker = corral.Worker(fixture_ref("basic:Basic"), slots=2)
        self.started = False
        self.stopped = False
        self.greeting = "hello"
        self.n = 0  # the target's counter, as the model expects it

    def callable_now(self) -> bool:
        return self.started and not self.stopped

    @rule()
    def start(self):
        if self.started:
            with pytest.raises(corral.InvalidState):
                self.worker.start()
            return
        self.worker.start()
        self.started = True

    @rule(a=st.integers(-1000, 1000), b=st.integers(-1000, 1000))
    def call(self, a, b):
        if not self.callable_now():
            with pytest.raises(corral.InvalidState):
                self.worker.call("add", a, b)
            return
        assert self.worker.call("add", a, b=b) == a + b

    @rule(k=st.integers(1, 20))
    def submit_many(self, k):
        if not self.callable_now():
            with pytest.raises(corral.InvalidState):
                self.worker.submit("add", 1)
            return
        futures = [self.worker.submit("add", i, i) for i in range(k)]
        assert [f.result(timeout=30) for f in futures] == [2 * i for i in range(k)]

    @rule(n=st.integers(0, 5))
    def stream(self, n):
        if not self.callable_now():
            with pytest.raises(corral.InvalidState):
                list(self.worker.stream("count", n))
            return
        assert list(self.worker.stream("count", n)) == list(range(n))

    @rule()
    def bump(self):
        if not self.callable_now():
            with pytest.raises(corral.InvalidState):
                self.worker.call("bump")
            return
        self.n += 1
        assert self.worker.call("bump") == self.n

    @rule()
    def remote_error(self):
        if self.callable_now():
            with pytest.raises(ValueError, match="bad value"):
                self.worker.call("boom")

    @rule(greeting=st.sampled_from(["hi", "salut", "hej"]))
    def reload(self, greeting):
        if not self.callable_now():
            with pytest.raises(corral.InvalidState):
                self.worker.reload({"greeting": greeting})
            return
        self.worker.reload({"greeting": greeting})
        self.greeting, self.n = greeting, 0  # a fresh instance
        assert self.worker.call("greet", "x") == f"{greeting}, x"

    @precondition(lambda self: self.started)
    @rule()
    def stop(self):
        self.worker.stop(grace=5)  # idempotent
        self.stopped = True

    @invariant()
    def health_tells_the_truth(self):
        if not hasattr(self, "worker"):
            return
        status = self.worker.health().status
        if not self.started:
            assert status == "new"
        elif self.stopped:
            assert status == "stopped"
        else:
            assert status in ("ready", "busy")

    def teardown(self):
        if hasattr(self, "worker"):
            self.worker.stop(grace=5)


WorkerLifecycle.TestCase.settings = settings(
    max_examples=15, stateful_step_count=15, deadline=None,
    suppress_health_check=list(HealthCheck))
test_worker_lifecycle = WorkerLifecycle.TestCase
