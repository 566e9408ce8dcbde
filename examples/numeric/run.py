"""Fit and use a ridge regression that runs in an isolated worker process.

    python examples/numeric/run.py
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import corral

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    rng = np.random.default_rng(42)
    n, d = 20_000, 16
    true_coef = rng.normal(size=d)
    X = rng.normal(size=(n, d))
    y = X @ true_coef + 3.0 + rng.normal(scale=0.1, size=n)

    t0 = time.perf_counter()
    with corral.Worker(f"{HERE}/regression.py:Ridge", config={"alpha": 0.5}) as worker:
        print(f"worker {worker.pid} ready in {time.perf_counter() - t0:.3f}s; "
              f"methods: {', '.join(sorted(worker.methods))}")
        fit = worker.submit("fit", X, y)
        coef = fit.result()
        print(f"closed-form fit: max |coef - true| = {np.abs(coef - true_coef).max():.4f}, "
              f"condition number {fit.metrics['condition_number']:.2f}")
        print(f"R^2 on fresh data: {worker.call('score', X[:1000], y[:1000]):.5f}")

        print("gradient descent, streamed:")
        for epoch, loss in enumerate(worker.stream("fit_sgd", X, y, epochs=8), 1):
            print(f"  epoch {epoch}: mse {loss:.5f}")
        state = worker.get_state()
        preds = worker.call("predict", X[:5])
        print("first predictions:", np.round(preds, 3), "targets:", np.round(y[:5], 3))
        print(f"state crossed back: coef {state['coef'].dtype} {state['coef'].shape}, "
              f"intercept {state['intercept']:.3f}")
        stats = worker.stats()
        print(f"calls served {stats.calls_served}, worker RSS {stats.rss / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
