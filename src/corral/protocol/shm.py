"""Big arrays and bytes out of band, through pooled shared memory.

A value above the threshold does not travel in the frame. The sender copies it once into a
*segment* (an anonymous ``memfd`` mapped in both processes) and the frame carries only
``[segment id, offset, length, ...]``; the receiver maps the segment (once) and builds an
array straight on that memory: one copy per transfer, and none at all for an array that was
allocated in a segment to begin with (``corral.empty``/``corral.zeros``).

Why memfd and not ``/dev/shm`` names: a memfd has no name. Its file descriptor crosses once
per segment over a dedicated ``SOCK_SEQPACKET`` socket (``SCM_RIGHTS``), and the kernel frees
the memory when the last descriptor and mapping are gone — after a clean stop, a crash of
either side or a SIGKILL alike. Nothing can be left behind in ``/dev/shm``.

Lifetime: a segment lent to the peer stays reserved until the peer's array (and every view
of it) is garbage collected; the peer then sends ``Release``. So a receiver may keep what it
got, or copy it. Writes to a received array are visible to the sender's copy only for
arrays from ``corral.empty``/``zeros`` (the memory is shared on purpose); data the sender
copied in is never read by the sender again.

Threads: finalizers run inside the garbage collector, at any allocation, so they only queue
segment ids; the connection flushes the queue at safe points (before sending a call, after
reading a reply, after each call in the worker).
"""

from __future__ import annotations

import _socket  # (not socket: see framing.py)
import bisect
import collections
import itertools
import mmap
import os
import struct
import threading
import weakref
from typing import TYPE_CHECKING, Any

from . import handoff

if TYPE_CHECKING:
    import socket

#: Values at least this big travel out of band.
DEFAULT_THRESHOLD = 64 * 1024
#: Idle segments kept for reuse (pre-faulted memory is what makes transfers fast).
MAX_IDLE_BYTES = 1 << 30
_PAGE = mmap.PAGESIZE
_ANNOUNCE = struct.Struct("<QQ")  # segment id, size
_FD = struct.Struct("i")


class Segment:
    """One memfd mapped in this process."""

    __slots__ = ("id", "size", "fd", "mm", "view", "address", "refs", "__weakref__")

    def __init__(self, seg_id: int, size: int):
        self.id = seg_id
        self.size = size
        self.fd = os.memfd_create(f"corral-{seg_id}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            # Pre-fault: first-touch page faults cost more than the copy itself.
            self.mm = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED | _POPULATE)
        except BaseException:
            os.close(self.fd)
            raise
        self.view = memoryview(self.mm)
        self.address = _address_of(self.view)
        self.refs = 0

    def close(self) -> None:
        try:
            self.view.release()
            self.mm.close()
        except BufferError:
            pass  # something still uses it; the mapping goes with that last user
        os.close(self.fd)


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def _address_of(view: memoryview) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class LocalPool:
    """This process's segments: lends them out, takes them back, keeps some for reuse."""

    def __init__(self, max_idle_bytes: int = MAX_IDLE_BYTES):
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._free: list[tuple[int, int, Segment]] = []  # (size, id, segment), sorted
        self._idle_order: collections.deque[int] = collections.deque()  # oldest idle first
        self._idle_bytes = 0
        self._max_idle = max_idle_bytes
        self._live: dict[int, Segment] = {}
        self._by_address: list[tuple[int, int]] = []  # (address, id), sorted
        self._exporters: weakref.WeakSet[Exporter] = weakref.WeakSet()

    def acquire(self, nbytes: int) -> Segment:
        """A segment of at least ``nbytes`` with one reference held by the caller: a free
        one up to twice the size, else a new one."""
        need = max(_PAGE, -(-nbytes // _PAGE) * _PAGE)
        with self._lock:
            i = bisect.bisect_left(self._free, (need, 0))
            if i < len(self._free) and self._free[i][0] <= 2 * need:
                _, _, seg = self._free.pop(i)
                self._idle_order.remove(seg.id)
                self._idle_bytes -= seg.size
                seg.refs = 1
                return seg
            seg_id = next(self._ids)
        seg = Segment(seg_id, need)
        seg.refs = 1
        with self._lock:
            self._live[seg.id] = seg
            bisect.insort(self._by_address, (seg.address, seg.id))
        return seg

    def retain(self, seg: Segment) -> None:
        with self._lock:
            seg.refs += 1

    def release(self, seg: Segment) -> None:
        """Drop one reference; at zero the segment is kept for reuse (evicting the oldest
        idle ones to make room) or, if it alone exceeds the idle cap, closed."""
        to_close = []
        with self._lock:
            seg.refs -= 1
            if seg.refs > 0:
                return
            if seg.size <= self._max_idle:
                self._idle_order.append(seg.id)
                bisect.insort(self._free, (seg.size, seg.id, seg))
                self._idle_bytes += seg.size
                while self._idle_bytes > self._max_idle:
                    to_close.append(self._evict_oldest())
            else:
                to_close.append(seg)
            for old in to_close:
                del self._live[old.id]
                self._by_address.remove((old.address, old.id))
            exporters = list(self._exporters)
        for old in to_close:
            for exporter in exporters:
                exporter._closed_segment(old.id)
            old.close()

    def _evict_oldest(self) -> Segment:
        seg_id = self._idle_order.popleft()
        for i, (_, sid, seg) in enumerate(self._free):
            if sid == seg_id:
                del self._free[i]
                self._idle_bytes -= seg.size
                return seg
        raise AssertionError("idle order and free list disagree")  # pragma: no cover

    def get(self, seg_id: int) -> Segment | None:
        return self._live.get(seg_id)

    def find(self, address: int, nbytes: int) -> Segment | None:
        """The live segment holding ``[address, address + nbytes)``, if any."""
        with self._lock:
            i = bisect.bisect_right(self._by_address, (address, float("inf"))) - 1
            if i < 0:
                return None
            seg = self._live.get(self._by_address[i][1])
        if seg is not None and seg.refs > 0 and address + nbytes <= seg.address + seg.size:
            return seg
        return None

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"segments": len(self._live), "idle_segments": len(self._free),
                    "bytes": sum(s.size for s in self._live.values()),
                    "idle_bytes": self._idle_bytes}


_pool: LocalPool | None = None
_pool_lock = threading.Lock()


def local_pool() -> LocalPool:
    """This process's pool (made on first use, so a process that sends nothing big pays
    nothing)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = LocalPool()
    return _pool


def _hold_while_alive(obj: Any, pool: LocalPool, seg: Segment) -> None:
    weakref.finalize(obj, pool.release, seg)


def empty(shape: Any, dtype: Any = float, order: str = "C") -> Any:
    """A numpy array allocated in shared memory: passing it to (or returning it from) a
    worker copies nothing. Its memory is shared with every process it is sent to while they
    hold it: a write on one side is seen on the other."""
    import numpy as np

    dt = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = dt.itemsize * int(np.prod(shape, dtype=np.int64))
    pool = local_pool()
    seg = pool.acquire(max(nbytes, 1))
    try:
        arr = np.ndarray(shape, dtype=dt, buffer=seg.view[:nbytes], order=order)
    except BaseException:
        pool.release(seg)
        raise
    # numpy collapses every view's base onto the first array above the buffer (``arr``), so
    # its finalizer runs only when the last view of it is gone.
    _hold_while_alive(arr, pool, seg)
    return arr


def zeros(shape: Any, dtype: Any = float, order: str = "C") -> Any:
    """Like ``empty``, filled with zeros."""
    arr = empty(shape, dtype, order)
    arr.fill(0)
    return arr


class Exporter:
    """The sending half of one connection: lends segments to the peer, announcing each
    segment's descriptor once over the fd socket, and takes them back on Release."""

    def __init__(self, fd_sock: socket.socket, threshold: int = DEFAULT_THRESHOLD,
                 peer: "Importer | None" = None):
        self.threshold = threshold
        self._sock = fd_sock
        self._peer = peer  # the same connection's Importer: arrays that live in its segments
        self._pool = local_pool()
        self._announced: set[int] = set()
        self._lent: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()
        self._closed = False
        #: Segments the peer mapped that we closed: tell it (Release.forget) so it unmaps.
        self.forgotten: collections.deque[int] = collections.deque()
        #: Other peers' segments lent on to this peer (handoff.py), by proxy id.
        self._proxies: dict[int, Any] = {}
        with self._pool._lock:
            self._pool._exporters.add(self)

    def _closed_segment(self, seg_id: int) -> None:
        with self._lock:
            if seg_id in self._announced:
                self._announced.discard(seg_id)
                self.forgotten.append(seg_id)

    def take_forgotten(self) -> list[int]:
        out = []
        while self.forgotten:
            out.append(self.forgotten.popleft())
        return out

    def _lend(self, seg: Segment) -> None:
        """Lend ``seg`` to the peer: the lease holds a reference until the peer releases it."""
        with self._lock:
            if self._closed:
                raise OSError("the connection is closed")
            if seg.id not in self._announced:
                send_fd(self._sock, _ANNOUNCE.pack(seg.id, seg.size), seg.fd)
                self._announced.add(seg.id)
            self._pool.retain(seg)
            self._lent[seg.id] += 1

    def export_bytes(self, data: Any) -> tuple[int, int, int]:
        """Copy bytes-like ``data`` into a segment lent to the peer; returns the reference
        ``(segment id, offset, length)``."""
        n = len(data)
        seg = self._pool.acquire(n)
        try:
            seg.view[:n] = data
            self._lend(seg)
        finally:
            self._pool.release(seg)  # the peer's lease holds it now (if lent)
        return seg.id, 0, n

    def export_array(self, arr: Any) -> tuple[int, int, int, bool]:
        """Where the peer finds a C-contiguous array: ``(segment, offset, nbytes, theirs)``.
        An array in one of the peer's own segments (an echo, a slice of an argument) goes
        back as a reference to it (``theirs``); one in our segments is lent as it is; any
        other is copied into a new lease."""
        nbytes = arr.nbytes
        if nbytes:
            address = arr.__array_interface__["data"][0]
            if self._peer is not None:
                found = self._peer.locate(address, nbytes)
                if found is not None:
                    return found[0], found[1], nbytes, True
            seg = self._pool.find(address, nbytes)
            if seg is not None:
                self._lend(seg)
                return seg.id, address - seg.address, nbytes, False
            if handoff.ENABLED and handoff.IMPORTERS:  # another peer's array: hand its
                # segment on, no copy
                handed = handoff.hand_over(self, arr, address, nbytes)
                if handed is not None:
                    return handed
        import numpy as np

        seg = self._pool.acquire(nbytes)
        try:
            if nbytes:
                dest = np.frombuffer(seg.view, dtype=np.uint8, count=nbytes)
                dest[:] = arr.reshape(-1).view(np.uint8)
            self._lend(seg)
        finally:
            self._pool.release(seg)
        return seg.id, 0, nbytes, False

    def own_array(self, seg_id: int, offset: int, nbytes: int, dtype: Any, shape: tuple,
                  order: str) -> Any:
        """An array on one of our own segments that the peer sent back by reference. Only
        a segment the peer holds a lease on may be named (it is untrusted)."""
        import numpy as np

        if seg_id in self._proxies:  # (another peer's segment, handed on: handoff.py)
            return handoff.own_array(self, seg_id, offset, nbytes, dtype, shape, order)
        with self._lock:
            leased = self._lent.get(seg_id, 0) > 0
        seg = self._pool.get(seg_id) if leased else None
        if seg is None:
            raise ValueError(f"the peer referred to segment {seg_id}, which it does not hold")
        if offset < 0 or nbytes < 0 or offset + nbytes > seg.size:
            raise ValueError(f"region [{offset}, {offset + nbytes}) is outside segment {seg_id}")
        count = element_count(shape, dtype, nbytes)
        self._pool.retain(seg)
        try:
            flat = np.frombuffer(seg.view, dtype=dtype, count=count, offset=offset)
        except BaseException:
            self._pool.release(seg)
            raise
        _hold_while_alive(flat, self._pool, seg)
        return flat.reshape(shape[::-1]).T if order == "F" else flat.reshape(shape)

    def released(self, seg_ids: list[int]) -> None:
        """The peer dropped these leases (a Release message). Ids it was never lent are
        ignored: a worker is untrusted and must not free what it does not hold."""
        for seg_id in seg_ids:
            if self._proxies and handoff.released(self, seg_id):
                continue
            with self._lock:
                if self._lent.get(seg_id, 0) <= 0:
                    continue
                self._lent[seg_id] -= 1
                if not self._lent[seg_id]:
                    del self._lent[seg_id]
            seg = self._pool.get(seg_id)
            if seg is not None:
                self._pool.release(seg)

    def close(self) -> None:
        """The peer is gone: every lease it held ends."""
        with self._lock:
            self._closed = True
            lent, self._lent = self._lent, collections.Counter()
            handoff.close(self)
        for seg_id, count in lent.items():
            seg = self._pool.get(seg_id)
            for _ in range(count):
                if seg is not None:
                    self._pool.release(seg)

    def lent(self) -> int:
        with self._lock:
            return sum(self._lent.values())


def _address_of_mmap(mm: mmap.mmap) -> int:
    import ctypes

    view = memoryview(mm)
    try:
        c = ctypes.c_char.from_buffer(view)
        address = ctypes.addressof(c)
        del c
    finally:
        view.release()
    return address


def send_fd(sock: socket.socket, data: bytes, fd: int) -> None:
    """``socket.send_fds(sock, [data], [fd])``, for a socket from ``_socket`` too."""
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _FD.pack(fd))])


def _recv_announcement(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One queued announcement, without blocking: (b"", []) when there is none.
    (Not socket.recv_fds: before Python 3.12 it ignores its flags and would block.)"""
    import array

    fds = array.array("i")
    try:
        data, ancdata, _flags, _addr = sock.recvmsg(
            _ANNOUNCE.size, _socket.CMSG_LEN(fds.itemsize), _socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b"", []
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


class Importer:
    """The receiving half of one connection: maps the peer's segments and builds arrays
    and bytes on them; queues a Release when an array is collected."""

    def __init__(self, fd_sock: socket.socket, max_segment: int):
        self._sock = fd_sock
        self._max = max_segment
        self._maps: dict[int, tuple[mmap.mmap, int]] = {}
        self._addresses: dict[int, int] = {}
        #: Each mapped segment's descriptor, kept so that it can be handed on to another
        #: peer (handoff.py); closed when the segment is forgotten.
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        self.releases: collections.deque[int] = collections.deque()
        handoff.IMPORTERS.add(self)

    def locate(self, address: int, nbytes: int) -> tuple[int, int] | None:
        """``(segment, offset)`` if ``[address, address + nbytes)`` lies in a mapped segment
        of the peer's."""
        for seg_id, base in list(self._addresses.items()):
            got = self._maps.get(seg_id)
            if got is not None and base <= address and address + nbytes <= base + got[1]:
                return seg_id, address - base
        return None

    def _segment(self, seg_id: int) -> tuple[mmap.mmap, int]:
        got = self._maps.get(seg_id)
        if got is not None:
            return got
        with self._lock:
            # The sender announces a segment before the frame that first uses it, so its
            # descriptor is already waiting in the socket (or it never comes: a lie).
            while seg_id not in self._maps:
                # Never wait: an announcement precedes the frame that needs it, so if none
                # is queued the peer lied (and waiting would hang us).
                data, fds = _recv_announcement(self._sock)
                if not data:
                    raise ValueError(f"shared memory segment {seg_id} was never announced")
                if len(fds) != 1 or len(data) != _ANNOUNCE.size:
                    for fd in fds:
                        os.close(fd)
                    raise ValueError("malformed shared memory announcement")
                announced_id, size = _ANNOUNCE.unpack(data)
                fd = fds[0]
                try:
                    if not 0 < size <= self._max or os.fstat(fd).st_size < size:
                        raise ValueError(f"shared memory segment of {size} bytes refused")
                    mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _POPULATE)
                except BaseException:
                    os.close(fd)
                    raise
                old = self._fds.pop(announced_id, None)
                if old is not None:
                    os.close(old)
                self._fds[announced_id] = fd
                self._maps[announced_id] = (mm, size)
                self._addresses[announced_id] = _address_of_mmap(mm)
            return self._maps[seg_id]

    def _region(self, seg_id: int, offset: int, nbytes: int) -> memoryview:
        mm, size = self._segment(seg_id)
        if offset < 0 or nbytes < 0 or offset + nbytes > size:
            raise ValueError(f"region [{offset}, {offset + nbytes}) is outside segment "
                             f"{seg_id} of {size} bytes")
        return memoryview(mm)[offset : offset + nbytes]

    def region(self, seg_id: int, offset: int, nbytes: int) -> memoryview:
        """A view of ``[offset, offset + nbytes)`` of a mapped segment (handoff.py)."""
        return self._region(seg_id, offset, nbytes)

    def descriptor(self, seg_id: int) -> tuple[int | None, int]:
        """The descriptor and size of a mapped segment (None once forgotten)."""
        with self._lock:
            got = self._maps.get(seg_id)
            return self._fds.get(seg_id), (got[1] if got is not None else 0)

    def import_bytes(self, seg_id: int, offset: int, nbytes: int, kind: type) -> Any:
        """A bytes (or bytearray) copy of the region; the lease ends at once."""
        region = self._region(seg_id, offset, nbytes)
        try:
            return kind(region)
        finally:
            region.release()
            self.releases.append(seg_id)

    def import_array(self, seg_id: int, offset: int, nbytes: int, dtype: Any,
                     shape: tuple, order: str) -> Any:
        """An array built on the peer's memory (no copy); the lease ends when it and every
        view of it are collected."""
        import numpy as np

        region = self._region(seg_id, offset, nbytes)
        try:
            count = element_count(shape, dtype, nbytes)
        except ValueError:
            region.release()
            raise
        flat = np.frombuffer(region, dtype=dtype, count=count)
        arr = flat.reshape(shape[::-1]).T if order == "F" else flat.reshape(shape)
        # On ``flat``, the first array above the buffer: numpy collapses every later view's
        # base onto it, so it lives exactly as long as anything built from it.
        weakref.finalize(flat, self.releases.append, seg_id)
        return arr

    def forget(self, seg_ids: list[int]) -> None:
        """The peer closed these segments: drop our mappings (arrays still using one keep
        it mapped until they go)."""
        with self._lock:
            for seg_id in seg_ids:
                got = self._maps.pop(seg_id, None)
                self._addresses.pop(seg_id, None)
                fd = self._fds.pop(seg_id, None)
                if fd is not None:
                    os.close(fd)
                if got is not None:
                    try:
                        got[0].close()
                    except BufferError:
                        pass
        if seg_ids:
            handoff.forgotten(self, seg_ids)

    def mapped(self) -> int:
        return len(self._maps)

    def take_releases(self) -> list[int]:
        """Ids whose leases ended since the last call (to send in a Release)."""
        out = []
        pop = self.releases.popleft
        while True:
            try:
                out.append(pop())
            except IndexError:
                return out

    def close(self) -> None:
        # Mappings stay valid for arrays still in use; drop our index of them.
        with self._lock:
            ids = list(self._maps)
            self._maps.clear()
            self._addresses.clear()
            fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)
        handoff.forgotten(self, ids)


def element_count(shape: tuple, dtype: Any, nbytes: int) -> int:
    """The elements of an array of ``shape`` and ``dtype``; ValueError unless they fill
    exactly ``nbytes`` (a peer's description of a region is untrusted)."""
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != nbytes:
        raise ValueError(f"shape {shape} of {dtype} does not fill {nbytes} bytes")
    return count


class Link:
    """Both halves of one connection's shared memory, and the Release news between them."""

    def __init__(self, fd_sock: socket.socket, threshold: int = DEFAULT_THRESHOLD,
                 max_segment: int = 1 << 40):
        self.importer = Importer(fd_sock, max_segment)
        self.exporter = Exporter(fd_sock, threshold, peer=self.importer)

    def take_release(self) -> Any:
        """A ``Release`` for the peer (leases of its segments we ended, our segments we
        closed), or None when there is nothing to say."""
        if not self.importer.releases and not self.exporter.forgotten:
            return None
        from .messages import Release

        ids = self.importer.take_releases()
        forget = self.exporter.take_forgotten()
        return Release(ids, forget) if ids or forget else None

    def apply(self, release: Any) -> None:
        """The peer's ``Release``."""
        self.exporter.released(release.ids)
        self.importer.forget(release.forget)

    def close(self) -> None:
        self.exporter.close()
        self.importer.close()
