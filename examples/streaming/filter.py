"""A streaming filter: chunks of a signal in, each chunk filtered as it arrives, out."""

import numpy as np


class LowPass:
    """A first-order IIR low-pass, y[n] = y[n-1] + a * (x[n] - y[n-1]), whose state
    (the last output) carries from one chunk to the next."""

    def filter(self, chunks, a: float = 0.05):
        """A bidirectional stream: one filtered chunk out per chunk in."""
        last = 0.0
        for chunk in chunks:  # an iterator: chunks arrive while the caller produces them
            out = np.empty_like(chunk)
            for i, v in enumerate(chunk):  # (plain loop: the point is the streaming)
                last = last + a * (v - last)
                out[i] = last
            yield out

    def energy(self, chunks) -> float:
        """One result for the whole stream."""
        return float(sum(float((c * c).sum()) for c in chunks))
