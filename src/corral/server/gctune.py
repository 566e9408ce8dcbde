"""The garbage collector's settings for a serving process.

Each request allocates a few hundred short-lived objects (the ASGI scope and messages, the
prediction record, the call's future and frames). With CPython's default thresholds
(700, 10, 10) that runs a generation-0 collection every few requests and a full one every
few hundred, each walking every live object: the records kept for GET, the app, every
imported module. Measured with a no-op model at 8 connections (bench_server's modes, the
two settings side by side in one run): server CPU per answer 628 -> 374 us with a worker,
368 -> 290 us with an instant runner. What startup made is frozen (never collected again),
and collections run 70x less often; reference counting still frees everything that is
not in a cycle at once, so memory grows only by the cycles made between two collections.
So what a request makes must form no cycle: with these thresholds cyclic garbage piles up
in generation 1 and comes out as one long pause (a finished record that kept its request
alive in cycles: a 3.3 s stall after ~80,000 predictions; predictions.py ``_let_go``, and
tests/server/test_retention.py checks that a dropped record needs no collection).
"""

from __future__ import annotations

import gc

#: generation 0 every 50,000 net allocations; generations 1 and 2 as CPython scales them.
THRESHOLDS = (50_000, 50, 100)


def tune() -> None:
    """Freeze what exists now and space collections out (call once, before serving)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
