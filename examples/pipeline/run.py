"""A 3-stage numpy pipeline (standardize -> PCA -> ridge) fitted and applied in one worker.

    python examples/pipeline/run.py

``fit`` fits each stage on what the stages before it output and returns every stage's
state; ``forward`` runs the chain in the worker in one call; the states load into a
second worker, which then predicts the same.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import corral

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = f"{HERE}/stages.py"


def main() -> int:
    rng = np.random.default_rng(7)
    latent = rng.normal(size=(5000, 3))
    mix = rng.normal(size=(3, 12))
    x = latent @ mix + 0.01 * rng.normal(size=(5000, 12)) + 5.0
    y = latent @ [2.0, -1.0, 0.5] + 1.0

    pipe = corral.Pipeline([f"{STAGES}:Standardize", (f"{STAGES}:PCA", {"k": 3}),
                            (f"{STAGES}:Ridge", {"alpha": 1e-3})])
    with corral.Worker(pipe) as w:
        print("stages:", " -> ".join(w.call("stage_names")))
        states = w.call("fit", x[:4000], y[:4000])
        for name, state in states.items():
            shapes = {k: getattr(v, "shape", v) for k, v in state.items()}
            print(f"  {name}: {shapes}")
        pred = w.call("forward", x[4000:])
        r2 = 1 - ((pred - y[4000:]) ** 2).sum() / ((y[4000:] - y[4000:].mean()) ** 2).sum()
        print(f"R^2 on held-out rows: {r2:.4f}")

    with corral.Worker(corral.Pipeline([f"{STAGES}:Standardize", f"{STAGES}:PCA",
                                        f"{STAGES}:Ridge"])) as fresh:
        fresh.set_state(states)
        same = np.array_equal(fresh.call("forward", x[4000:]), pred)
        print(f"a second worker with the states predicts the same: {same}")
    return 0 if r2 > 0.99 and same else 1


if __name__ == "__main__":
    sys.exit(main())
