"""Streaming input: chunks of a signal are filtered in the worker as they arrive.

    python examples/streaming/run.py

The generator ``sensor()`` produces the signal 4,096 samples at a time; the worker's
``filter`` method receives an iterator of chunks and yields one filtered chunk per chunk
(``w.stream("filter", sensor())``). At most ``stream_window`` chunks are in flight each
way, so the producer never runs ahead of the filter by more than that.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import corral

HERE = os.path.dirname(os.path.abspath(__file__))
CHUNK = 4096


def sensor(n_chunks: int, produced: list):
    rng = np.random.default_rng(3)
    t = 0
    for _ in range(n_chunks):
        n = np.arange(t, t + CHUNK)
        produced.append(len(produced) + 1)
        yield np.sin(2 * np.pi * n / 2000.0) + 0.5 * rng.normal(size=CHUNK)
        t += CHUNK


def main() -> int:
    n_chunks = 32
    produced: list = []
    with corral.Worker(f"{HERE}/filter.py:LowPass", stream_window=4) as w:
        outs = []
        ahead = 0
        for i, out in enumerate(w.stream("filter", sensor(n_chunks, produced), a=0.05)):
            outs.append(out)
            ahead = max(ahead, len(produced) - (i + 1))
        filtered = np.concatenate(outs)
        energy = w.call("energy", (c for c in outs))

    # The same filter over the whole signal at once, in-process: the same samples.
    sys.path.insert(0, HERE)
    from filter import LowPass

    whole = np.concatenate(list(sensor(n_chunks, [])))
    expected = next(LowPass().filter(iter([whole]), a=0.05))
    same = np.allclose(filtered, expected, rtol=0, atol=1e-12)
    print(f"{len(outs)} chunks of {CHUNK} samples filtered as they arrived")
    print(f"chunked result equals filtering the whole signal: {same}")
    print(f"the producer ran at most {ahead} chunks ahead of the reader")
    print(f"energy of the filtered signal: {energy:.1f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
