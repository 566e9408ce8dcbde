"""Hand a segment from one peer to another: worker A's array sent on to worker B without
the host copying it.

The host maps A's segment when A's result arrives (protocol/shm.py) and keeps its
descriptor. When that array, or a view of it, goes to B, B's exporter does not copy it into
a segment of the host's own. It passes A's descriptor on to B under a new id of the host's,
a *proxy*, and B maps A's memory. So the intermediate of a chain of workers is copied once,
by A into its segment (not at all if A built it with ``corral.empty``), however many
workers it crosses.

Leases: while B holds a proxy, the proxy holds the host's array. That keeps the host's
lease on A's segment, so A cannot reuse the memory under B. When B releases the proxy
(Release), the hold goes; the proxy stays, idle, so that the next array A makes in that
(pooled, reused) segment reaches B without a new mapping. When A closes the segment (the
host's importer forgets it) or goes, B is told to unmap the proxy (``Release.forget``). If B sends the array back (an echo or a
slice), it arrives as a reference to the proxy and is rebuilt on the host's own mapping of
A's segment. A that dies leaves B's mapping valid: a memfd lives while anyone maps it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

#: Hand segments on (False: copy as before; benchmarks/bench_streams.py's baseline).
ENABLED = True
#: Every live Importer of this process: where a foreign array may live.
IMPORTERS: "weakref.WeakSet[Any]" = weakref.WeakSet()
_lock = threading.Lock()


class Proxy:
    """One foreign segment lent to this exporter's peer under ``id``."""

    __slots__ = ("id", "importer", "foreign_id", "size", "holds")

    def __init__(self, proxy_id: int, importer: Any, foreign_id: int, size: int):
        self.id = proxy_id
        self.importer = importer
        self.foreign_id = foreign_id
        self.size = size
        self.holds: list[Any] = []  # one host array per lease the peer holds


def hand_over(exporter: Any, arr: Any, address: int, nbytes: int,
              ) -> tuple[int, int, int, bool] | None:
    """Lend ``arr``'s foreign segment to ``exporter``'s peer, if ``arr`` lives in a segment
    another peer lent this process; the reference ``(id, offset, nbytes, False)``, else
    None (the caller copies)."""
    with _lock:
        importers = [i for i in IMPORTERS if i is not exporter._peer]
    for importer in importers:
        found = importer.locate(address, nbytes)
        if found is None:
            continue
        foreign_id, offset = found
        fd, size = importer.descriptor(foreign_id)
        if fd is None:
            return None  # forgotten meanwhile: copy instead
        with exporter._lock:
            if exporter._closed:
                raise OSError("the connection is closed")
            proxy = next((p for p in exporter._proxies.values()
                          if p.importer is importer and p.foreign_id == foreign_id), None)
            if proxy is None:
                from .shm import _ANNOUNCE, local_pool, send_fd

                proxy = Proxy(next(local_pool()._ids), importer, foreign_id, size)
                send_fd(exporter._sock, _ANNOUNCE.pack(proxy.id, size), fd)
                exporter._proxies[proxy.id] = proxy
            proxy.holds.append(arr)
        return proxy.id, offset, nbytes, False
    return None


def released(exporter: Any, proxy_id: int) -> bool:
    """The peer ended one lease of ``proxy_id``; False if it is no proxy of ours. The
    last one ends the proxy: the peer is told to unmap it."""
    with exporter._lock:
        proxy = exporter._proxies.get(proxy_id)
        if proxy is None:
            return False
        if proxy.holds:
            proxy.holds.pop()  # (idle when none is left: kept for the segment's next use)
    return True


def forgotten(importer: Any, foreign_ids: Any) -> None:
    """``importer``'s peer closed these segments (or is gone): the proxies of them end,
    and the peers they were handed to are told to unmap them."""
    from .shm import local_pool

    pool = local_pool()
    with pool._lock:
        exporters = list(pool._exporters)
    ids = set(foreign_ids)
    for exporter in exporters:
        if not exporter._proxies:
            continue
        with exporter._lock:
            for proxy in [p for p in exporter._proxies.values()
                          if p.importer is importer and p.foreign_id in ids]:
                del exporter._proxies[proxy.id]
                exporter.forgotten.append(proxy.id)


def own_array(exporter: Any, proxy_id: int, offset: int, nbytes: int, dtype: Any,
              shape: tuple, order: str) -> Any:
    """The peer sent back (part of) a proxy it holds: an array on the host's mapping of
    the foreign segment, holding that segment's lease while it lives."""
    import numpy as np

    with exporter._lock:
        proxy = exporter._proxies.get(proxy_id)
        holds = list(proxy.holds) if proxy is not None else []
    if not holds:  # (an idle proxy: the peer holds no lease on it)
        raise ValueError(f"the peer referred to segment {proxy_id}, which it does not hold")
    from .shm import element_count

    count = element_count(shape, dtype, nbytes)
    region = proxy.importer.region(proxy.foreign_id, offset, nbytes)
    flat = np.frombuffer(region, dtype=dtype, count=count)
    # (the host's array keeps the foreign lease: hold one while this one lives)
    weakref.finalize(flat, _keep, holds[-1])
    return flat.reshape(shape[::-1]).T if order == "F" else flat.reshape(shape)


def _keep(obj: Any) -> None:
    """A finalizer's closure holds ``obj`` until it runs: nothing to do then."""


def close(exporter: Any) -> None:
    """The peer is gone: every proxy it held ends."""
    exporter._proxies.clear()
