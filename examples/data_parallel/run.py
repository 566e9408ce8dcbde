"""Data-parallel training on a Pool of 2 workers, matching single-process training.

    python examples/data_parallel/run.py

Each worker holds a replica of a small torch model (a one-stage ``corral.Pipeline``).
Every step, each worker computes the gradients of the loss on its half of the batch
(``get_gradients``), the host averages them and every replica applies the average
(``apply_gradients``): replicas stay identical, and after N steps the weights equal those
of the same model trained in this process on the whole batch (to 1e-6; in float64 the
difference is rounding).
"""

from __future__ import annotations

import os
import sys

import numpy as np

import corral

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 25
LR = 0.05


def main() -> int:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8))
    y = (np.sin(x[:, :1]) + x[:, 1:2] * x[:, 2:3] - 0.5 * x[:, 3:4])
    shards = [(x[:256], y[:256]), (x[256:], y[256:])]  # equal halves: mean of means = mean

    # Single process: the same pipeline, run here on the whole batch.
    sys.path.insert(0, HERE)
    from model import Net

    local = corral.Pipeline([Net], lr=LR)
    for _ in range(STEPS):
        local.apply_gradients(local.get_gradients(x, y)["gradients"])
    expected = local.get_state("net")

    # Data parallel: one replica per worker of a Pool of 2.
    with corral.Pool(corral.Pipeline([f"{HERE}/model.py:Net"], lr=LR), workers=2) as pool:
        replicas = pool.workers
        first_loss = None
        for step in range(STEPS):
            futures = [r.submit("get_gradients", sx, sy) for r, (sx, sy) in zip(replicas, shards)]
            results = [f.result() for f in futures]
            if first_loss is None:
                first_loss = np.mean([r["loss"] for r in results])
            grads = results[0]["gradients"]
            mean = {stage: {name: (g + results[1]["gradients"][stage][name]) / 2
                            for name, g in params.items()}
                    for stage, params in grads.items()}
            for f in [r.submit("apply_gradients", mean) for r in replicas]:
                f.result()
        states = [r.call("get_state", "net") for r in replicas]
        last_loss = np.mean([r.call("get_gradients", sx, sy)["loss"]
                             for r, (sx, sy) in zip(replicas, shards)])

    worst = max(float(np.abs(states[i][k] - expected[k]).max())
                for i in range(2) for k in expected)
    same_replicas = all(np.array_equal(states[0][k], states[1][k]) for k in expected)
    print(f"{STEPS} steps on 2 workers: loss {first_loss:.4f} -> {last_loss:.4f}")
    print(f"replicas identical: {same_replicas}")
    print(f"max |data-parallel - single-process| over all weights: {worst:.2e}")
    ok = worst < 1e-6 and same_replicas and last_loss < first_loss
    print("matches single-process training to 1e-6:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
