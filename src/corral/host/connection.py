"""The host's end of one worker's sockets: send calls, route replies by call id.

::

    caller threads ──submit()──► window? ──yes──► data socket ──► worker
                                   │no                              │
                                   ▼                                │
                              waiting deque ◄── freed by replies ◄──┤
    futures/streams ◄── route by id ◄── reader thread ◄── data socket
    control requests ◄── route by seq ◄── control thread ◄── control socket

A call is sent at once while the *window* has room (``slots + prefetch`` calls and at most
``WINDOW_BYTES`` of frames in flight), so the worker always has its next call queued in
the socket (pipelining) while the socket buffers can never fill up and block a sender.
Beyond the window calls wait in a host-side deque and are sent, in order, by the reader
thread as replies free room.

Cancelling a call (``cancel``) fails its sink at once; a call not sent yet is forgotten, a
sent one is replaced in the pending table by a placeholder that swallows whatever else the
worker sends for it, and a Cancel goes out on the control channel. The placeholder keeps its
place in the window until the worker's final reply says the work stopped; if that does not
come within ``cancel_grace`` seconds, ``on_overdue`` kills the worker.

Everything the worker sends is untrusted: a frame that is oversize, truncated or does not
decode, or a reply for a call that was never sent, makes the worker defunct (``on_broken``)
and fails every call with the error; the reader thread never raises. A reply that decodes
but holds a value the host cannot rebuild (a type it has not imported) fails only its call
(``UndecodableValue``). Every waiter ends through ``calls.settle()``, which never raises,
and a call's final reply ends its sink in one place (``_end``), so no caller is ever left
waiting.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import threading
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

from ..exceptions import ProtocolError, RemoteError, UndecodableValue, WorkerCrashed
from ..protocol import messages as m
from ..protocol.endpoint import Endpoint
from ..protocol.framing import NOT_READY, FrameError, TruncatedFrame
from ..protocol.values import args_to_wire, find_placeholder, make_decoder, make_encoder, to_wire
from .calls import settle
from .timers import timers

log = logging.getLogger("corral")

#: Bytes of call frames in flight before further calls wait on the host. Well below the
#: kernel's Unix socket buffer, so a send never blocks on a worker that is busy.
WINDOW_BYTES = 128 * 1024
#: How long the reader thread stands by after a caller last read replies itself, before it
#: takes over (and the longest a call from ``submit()`` waits in the outbox meanwhile).
LEAD_GRACE = 0.001
#: Calls an event loop queues in one iteration before they go out without waiting for its
#: end: the worker starts on the first ones while the loop makes the rest (measured: 64
#: calls sent once at the end of the iteration left the worker idle meanwhile).
LOOP_BATCH = 16


class Connection:
    def __init__(self, control: Any, data: Any, fds: Any, *, window: int, allow_pickle: bool,
                 oob_threshold: int,
                 max_frame: int, on_worker_log: Callable[[str, str], None],
                 on_broken: Callable[[BaseException | None], BaseException],
                 make_error: Callable[[Any, m.ErrorInfo], BaseException],
                 cancel_grace: float = 2.0,
                 on_overdue: Callable[[int], None] = lambda call_id: None,
                 on_settled: Callable[[], None] = lambda: None):
        self._control = control
        self._data = data
        self._window = window
        self._allow_pickle = allow_pickle
        self._max_frame = max_frame
        self._on_worker_log = on_worker_log
        self._on_broken = on_broken
        self._make_error = make_error
        #: Encode a message (a Call) for ``submit``/``call``.
        self.encode = make_encoder().encode
        self.cancel_grace = cancel_grace
        self._on_overdue = on_overdue
        #: Cancelled calls the worker has not yet confirmed stopped. While there are any,
        #: the Worker holds new calls back (a stuck call may cost the process its life,
        #: and calls never sent to it survive that); on_settled() says when they are done.
        self.cancels_pending = 0
        self._on_settled = on_settled
        self._endpoint = ep = Endpoint(control, data, fds, max_frame)
        self._data_reader, self._control_reader = ep.data_in, ep.control_in
        self._data_out, self._control_out = ep.data_out, ep.control_out
        # Big values in calls go out through exporter; big values in replies come in
        # through importer (protocol/shm.py).
        self.shm = ep.link(oob_threshold)
        self.importer, self.exporter = self.shm.importer, self.shm.exporter
        # Values the host cannot rebuild, left as placeholders by the last decode.
        self._unrebuilt: list = []
        self._data_decode = make_decoder(m.WorkerData, allow_pickle, self.importer,
                                         exporter=self.exporter,
                                         unknown=self._unrebuilt).decode
        self._control_decoder = make_decoder(m.WorkerControl, allow_pickle)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._idle_waiters = 0
        self.completed = 0
        self._pending: dict[int, Any] = {}
        self._waiting: deque[tuple[int, bytes]] = deque()
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._last_id = 0
        self._seqs = itertools.count(1)
        self._requests: dict[int, Future] = {}
        self._broken: BaseException | None = None
        self._failed_all = False
        self._ended = threading.Event()  # set once every call has been failed
        self._threads: list[threading.Thread] = []
        # Whoever holds _read_lock reads the data socket: the reader thread, or a caller
        # blocked in call() while no one else reads. _wake tells the thread to read.
        self._read_lock = threading.Lock()
        self._reader: int | None = None  # the thread holding _read_lock
        self._reading = False  # the reader thread is in its read loop
        self._wake = threading.Event()
        # Waiter leads: a thread blocked in a future's result() reads replies itself
        # (lead_future). While callers lead, the reader thread stands by (it takes over
        # only once nobody led for LEAD_GRACE), and submit() leaves calls in the outbox,
        # to go out together with the next send, the leader's first read, or the end of the
        # reader's grace.
        self._lead_seen = False  # a caller led (or wanted to) since the reader last looked
        self._standby = False  # the reader thread waits out LEAD_GRACE
        self._outbox: list[bytes] = []
        self._led: Any = None  # the future whose waiter reads now
        self._wanting: set = set()  # futures whose waiters wait for the socket to be free
        self._kick: tuple[int, int] | None = None  # a pipe that wakes the leader's poll
        # An event loop awaiting calls reads replies itself too, when the socket is
        # readable (attach_loop), and sends its calls once per loop iteration (at once
        # to an idle worker).
        self._loop_lead: Any = None
        self._loop_fd: int | None = None  # the descriptor it watches (attach_loop)
        self._flush_soon = False
        self._poll: Any = None

    # -- handshake (before the reader threads run) -----------------------------------------

    def read_control(self) -> Any:
        """Read one control message synchronously; None at end of stream."""
        frame = self._control_reader.read()
        return None if frame is None else self._control_decoder.decode(frame)

    def send_control(self, msg: Any) -> None:
        self._control_out.send(msg)

    def start(self, pid: int) -> None:
        for target, name in ((self._read_data, "data"), (self._read_control, "control")):
            t = threading.Thread(target=target, name=f"corral-{name}-{pid}", daemon=True)
            t.start()
            self._threads.append(t)

    # -- calls ------------------------------------------------------------------------------

    def encode_call(self, call_id: int, method: str, args: tuple, kwargs: dict,
                    options: Any, window: int = 0, inputs: list | None = None) -> bytes:
        """The one way a Call is put on the wire: the arguments and ``options.context``
        through the value codec (big values into shared memory), the leases this side
        ended carried along, the frame's size checked (ValueError beyond max_frame).
        ``window`` and ``inputs``: flow control and streamed arguments (host/flow.py,
        host/instream.py)."""
        allow_pickle = self._allow_pickle
        if args or kwargs:
            args, kwargs = args_to_wire(args, kwargs, allow_pickle, self.exporter)
        else:
            args = []
        context = options.context
        if context is not None:
            context = to_wire(context, allow_pickle=allow_pickle, where="context")
        streams = m.CallStreams(window, inputs) if window or inputs else None
        payload = self.encode(m.Call(call_id, method, args, kwargs, context,
                                     self.shm.take_release(), options.convert, streams))
        if len(payload) > self._max_frame:
            raise too_large(len(payload), self._max_frame)
        return payload

    def submit(self, call_id: int, payload: bytes, sink: Any) -> None:
        """Register ``sink`` for ``call_id`` and send the encoded Call (now or when the
        window has room); the reader thread delivers its messages."""
        loop = getattr(sink, "_lead_loop", None)
        if loop is not None:
            self.attach_loop(loop, calling=True)
            if self._loop_lead is not loop:
                loop = None
        self._send_frames(self._admit([(call_id, payload, sink)], defer=True, loop=loop))
        # (an event loop that reads needs no reader thread: it is woken by the other
        # paths, a thread's call or wait_idle, should the loop stop reading)
        if loop is None and not self._reading and not self._standby \
                and not self._wake.is_set():
            self._wake.set()

    def attach_loop(self, loop: Any, calling: bool = False) -> None:
        """Let ``loop`` (running, on this thread) read replies when the socket is readable:
        asyncio callers then get theirs without a hand-off from the reader thread. One
        loop at a time; another loop's calls are delivered as before. ``calling``: the
        loop is about to make a call (else it attaches only while calls are pending).

        The loop watches a descriptor of its own (a dup of the data socket's), closed only
        once the loop has let go of it: a descriptor closed under a watching loop (the
        worker stopped from the loop's thread, a restart on another) could otherwise come
        back under the same number, and libuv aborts the process on the stale watch. So
        the loop may stay attached between calls (an attach and a detach cost ~15 us a
        call); it lets go when another thread reads, or the connection ends."""
        current = self._loop_lead
        if current is loop or self._failed_all or not (calling or self._pending):
            return
        if current is not None:
            if current.is_running() and not current.is_closed():
                return
            self._release_loop()  # a loop that has stopped: the new one leads
        try:
            fd = os.dup(self._data.fileno())
        except OSError:
            return  # closed meanwhile
        try:
            loop.add_reader(fd, self._loop_readable, loop)
        except Exception:  # noqa: BLE001 - a loop that cannot watch sockets: not a leader
            os.close(fd)
            return
        # uvloop (libuv's uv_poll_init) makes the descriptor non-blocking, for every
        # thread (the flag belongs to the socket, not to the descriptor): blocking again,
        # other threads' big writes and reads go straight through instead of waiting out
        # EAGAIN in poll (framing.py). The loop reads with MSG_DONTWAIT.
        if not os.get_blocking(fd):
            os.set_blocking(fd, True)
        self._loop_lead, self._loop_fd = loop, fd

    def _detach_loop(self, loop: Any) -> None:
        """On ``loop``'s thread: stop watching, and close its descriptor."""
        if self._loop_lead is loop:
            self._release_loop()

    def _release_loop(self) -> None:
        """Stop the leading loop's watch and close its descriptor: on the loop's thread, or
        while that loop runs nowhere (stopped, or closed: a closed loop has let go)."""
        loop, fd = self._loop_lead, self._loop_fd
        self._loop_lead = self._loop_fd = None
        if loop is None:
            return
        if not loop.is_closed():
            try:
                loop.remove_reader(fd)
            except Exception:  # noqa: BLE001 - a loop closing meanwhile has let go
                pass
        os.close(fd)

    def _release_loop_at_close(self) -> None:
        """``close()``: a loop running on another thread lets go itself, on the end of
        stream it reads next (the sockets are shut down); any other, now."""
        loop = self._loop_lead
        if loop is None:
            return
        if loop.is_running() and not loop.is_closed():
            import asyncio

            try:
                if asyncio.get_running_loop() is not loop:
                    return
            except RuntimeError:  # no loop runs on this thread
                return
        self._release_loop()

    def _loop_readable(self, loop: Any) -> None:
        """On the loop: read and route what has arrived, without blocking."""
        self._lead_seen = True
        if not self._read_lock.acquire(blocking=False):
            # Someone else reads, and delivers; the loop attaches again on its next call.
            self._detach_loop(loop)
            return
        self._reader = threading.get_ident()
        has_frame = self._data_reader.has_frame
        try:
            # One recv a wake-up: once the frames it brought are routed, back to the loop
            # instead of a recv that would only say EAGAIN (the loop's readiness is level-
            # triggered: it calls again while the socket has more).
            while self._read_one(nowait=True) and has_frame():
                pass
        finally:
            self._let_go(wake=False)
        if self._failed_all:
            self._detach_loop(loop)

    def _flush_outbox(self) -> None:
        with self._lock:
            self._flush_soon = False
            out, self._outbox = self._outbox, []
        self._send_frames(out)

    def call_begin(self, call_id: int, payload: bytes, sink: Any) -> bool:
        """Like ``submit``, for a caller that blocks until the call ends. True when this
        thread must now read the replies itself (``lead``), because no one else is
        reading: that saves a thread hand-off. False: someone else reads and delivers the
        reply (the sink was prepared to wait)."""
        self._refuse_reentry()
        if not self._read_lock.acquire(blocking=False):
            sink.prepare_to_wait()
            self._register(call_id, payload, sink)
            if not self._reading:
                self._wake.set()
            return False
        try:
            self._register(call_id, payload, sink)
        except BaseException:
            self._read_lock.release()
            raise
        return True

    def submit_batch(self, calls: list[tuple[int, bytes, Any]]) -> None:
        """Register several calls and send those the window admits with one system call.
        Nothing wakes the reader thread: the caller reads replies itself (``read_until``)."""
        self._send_frames(self._admit(calls))

    def read_until(self, sink: Any) -> None:
        """Block until ``sink`` (prepared to wait) is finished, reading replies on this
        thread when no one else is reading."""
        self._refuse_reentry()
        if not sink._finished and self._read_lock.acquire(blocking=False):
            self.lead(sink)
        if not sink._finished and not self._reading:
            self._wake.set()  # someone else held the lock; make sure a reader runs

    def _refuse_reentry(self) -> None:
        if self._reader == threading.get_ident():
            # An on_event callback runs on the thread that reads replies: waiting there
            # for another reply could never end.
            raise RuntimeError("a blocking call cannot be made from an on_event callback; "
                               "use submit() there, or hand the work to another thread")

    def lead(self, sink: Any) -> None:
        """Holding ``_read_lock`` (``call_begin`` returned True): read and route replies
        until ``sink`` is finished, then let the lock go."""
        self._reader = threading.get_ident()
        try:
            while not sink._finished:
                if not self._read_one():
                    # The channel ended; another thread may still be failing the calls.
                    self._ended.wait()
                    break
        finally:
            self._let_go()

    def _let_go(self, wake: bool = True) -> None:
        """A caller stops reading (holding ``_read_lock``): the reader thread takes over
        what is left after its grace (``wake`` False: an event loop that goes on reading)."""
        self._reader = None
        self._lead_seen = True
        self._read_lock.release()
        self._call_wanting()
        if wake and self._pending and not self._standby and not self._wake.is_set():
            self._wake.set()

    def _call_wanting(self) -> None:
        """The socket is free: wake the futures' waiters that wanted it (``waiting_for``)."""
        if self._wanting:
            with self._lock:
                wanting, self._wanting = self._wanting, set()
            for sink in wanting:
                with sink._condition:
                    sink._condition.notify_all()

    def waiting_for(self, sink: Any) -> bool:
        """True while ``sink``'s waiter (lead_future returned False) waits for the socket
        to be free; call under ``sink._condition``."""
        return sink in self._wanting

    def lead_future(self, sink: Any) -> bool:
        """For a thread blocked in ``result()`` of ``sink`` (a CallFuture): read and route
        replies on this thread until ``sink`` is done (True). False when someone else reads
        now: the caller waits for them to deliver, and tries again after LEAD_GRACE (the
        reader thread gives the socket up after its next message)."""
        self._refuse_reentry()
        self._lead_seen = True
        if not self._read_lock.acquire(blocking=False):
            with self._lock:
                self._wanting.add(sink)
            if self._reading:
                self._ring()  # the reader thread lets go at once
            return False
        self._reader = threading.get_ident()
        self._led = sink
        try:
            if self._failed_all:  # (closed: every call is failed, or about to be)
                self._ended.wait()
                return True
            has_frame, done = self._data_reader.has_frame, sink.done
            while not done():
                if not has_frame():
                    # Before blocking: send what the caller submitted meanwhile, in one
                    # system call. (Held back until the worker ran dry, batches were bigger
                    # but the two processes took turns instead of running side by side.)
                    out = self._outbox
                    if out:
                        with self._lock:
                            out, self._outbox = self._outbox, []
                        self._send_frames(out)
                    # Wait for the socket, or for a kick: a cancel, a deadline or the end of
                    # the channel settled the future on another thread.
                    if not self._wait_readable():
                        continue
                if not self._read_one():
                    self._ended.wait()
                    break
            # Deliver what is already here too: the next waiters then find their futures
            # done (a burst of replies is one read, not one leader each).
            while has_frame() and self._read_one():
                pass
        finally:
            self._led = None
            self._let_go()
        return True

    def _make_poll(self) -> Any:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._kick = (r, w)
        poll = select.poll()
        poll.register(self._data, select.POLLIN)
        poll.register(r, select.POLLIN)
        self._poll = poll
        return poll

    def _kick_leader(self, sink: Any) -> None:
        """``sink`` was settled off the reading thread: if its waiter reads, wake it."""
        if self._kick is not None and self._led is sink and self._reader != threading.get_ident():
            self._ring()

    def _ring(self) -> None:
        """Wake whoever polls the data socket (it re-checks why it reads)."""
        kick = self._kick
        if kick is not None:
            try:
                os.write(kick[1], b"k")
            except OSError:
                pass  # the pipe is full (it is awake already) or closed

    def _wait_readable(self) -> bool:
        """Block (holding ``_read_lock``, nothing buffered) until the data socket has
        something (True) or someone rang (False)."""
        poll = self._poll or self._make_poll()
        kick = self._kick[0]
        if any(fd == kick for fd, _ in poll.poll()):
            _drain(kick)
            return False
        return True

    def want_reader(self) -> None:
        """A waiter that does not read itself (a deadline on its wait) needs the reader
        thread now, not after its grace."""
        if not self._reading:
            self._wake.set()

    def _register(self, call_id: int, payload: bytes, sink: Any) -> None:
        self._send_frames(self._admit([(call_id, payload, sink)]))

    def submit_or_refuse(self, call_id: int, payload: bytes, sink: Any) -> BaseException | None:
        """Like ``submit``, but a connection that is already broken returns its error
        instead of failing the sink: for a caller holding locks that the sink's done
        callbacks may need."""
        refused: list = []
        self._send_frames(self._admit([(call_id, payload, sink)], refused))
        if refused:
            return refused[0]
        if not self._reading:
            self._wake.set()
        return None

    def _admit(self, calls: list[tuple[int, bytes, Any]],
               refused: list | None = None, defer: bool = False,
               loop: Any = None) -> list[bytes]:
        """Register calls as pending; return the payloads the window lets go now (the rest
        wait in order for replies to free room). ``defer``: while the reader thread stands
        by, leave them in the outbox instead; ``loop``: leave them there until the end of
        this iteration of the (reading) event loop, unless nothing else is in flight (an
        idle worker gets them at once)."""
        to_send: list[bytes] = []
        with self._lock:
            broken = self._broken
            if broken is None:
                for call_id, payload, sink in calls:
                    size = len(payload) + 4
                    self._pending[call_id] = sink
                    sink._owner = self
                    sink._size = size
                    if call_id > self._last_id:
                        self._last_id = call_id
                    if self._waiting or not self._fits(size):
                        self._waiting.append((call_id, payload))
                        continue
                    self._in_flight += 1
                    self._in_flight_bytes += size
                    sink._sent = True
                    to_send.append(payload)
                outbox = self._outbox
                if outbox:  # (they go first: calls reach the worker in id order)
                    outbox.extend(to_send)  # (not to_send[:0] =: a copy of it per call)
                    to_send = outbox
                    self._outbox = []
                if loop is not None:
                    # An idle worker gets the call at once (a sequential caller waits on
                    # it: deferring cost ~40 us a call); while others are in flight the
                    # worker is busy anyway, and this iteration's calls go together.
                    if len(to_send) >= LOOP_BATCH or self._in_flight <= len(to_send):
                        return to_send
                    self._outbox = to_send
                    if not self._flush_soon:
                        self._flush_soon = True
                        loop.call_soon(self._flush_outbox)
                    return []
                if defer and self._standby:
                    self._outbox = to_send
                    return []
                return to_send
        # Broken: the sinks fail outside the lock (their done callbacks may call in).
        if refused is not None:
            refused.append(broken)
        else:
            for _, _, sink in calls:
                settle(sink, error=broken)
        return to_send

    def flush_releases(self) -> None:
        """Send the shared-memory news on its own (when no call is about to carry it)."""
        self._endpoint.flush_releases()

    def _fits(self, size: int) -> bool:
        if self._in_flight == 0:
            return True
        return self._in_flight < self._window and self._in_flight_bytes + size <= WINDOW_BYTES

    def _send_frames(self, payloads: list[bytes]) -> None:
        """Send calls with one system call."""
        if not payloads:
            return
        try:
            if len(payloads) == 1:
                self._data_out.send_frame(payloads[0])
            else:
                self._data_out.send_frames(payloads)
        except OSError:
            pass  # the reader sees the worker's end and fails every pending call

    def send_stream(self, msg: Any) -> None:
        """Send a message of a streamed argument (host/instream.py) on the data channel.
        Outside the call window: the call's own credit bounds what is in flight."""
        payload = self.encode(msg)
        if len(payload) > self._max_frame:
            raise ValueError(f"a chunk of a streamed argument makes a frame of "
                             f"{len(payload)} bytes, beyond the frame limit of "
                             f"{self._max_frame} bytes (max_frame); big bytes and arrays "
                             "cross through shared memory, other values must fit")
        self._data_out.send_frame(payload)

    def holds(self, sink: Any) -> bool:
        """True while ``sink``'s call is pending here (not ended, failed or cancelled)."""
        return self._pending.get(sink.id) is sink

    def in_flight(self) -> int:
        """Calls sent or waiting that have not finished."""
        return len(self._pending)

    def sent(self) -> int:
        """Calls sent to the worker that have not finished."""
        return self._in_flight

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no call is pending (True) or ``timeout`` passes (False)."""
        self._wake.set()  # replies nobody is reading (an abandoned map()) must be read
        with self._lock:
            self._idle_waiters += 1
            try:
                return self._idle.wait_for(lambda: not self._pending, timeout)
            finally:
                self._idle_waiters -= 1

    # -- reader threads ---------------------------------------------------------------------

    def _read_data(self) -> None:
        """The reader thread: reads while calls are pending and no caller reads itself."""
        wake, read_lock = self._wake, self._read_lock
        ident = threading.get_ident()
        while not self._failed_all:
            if not self._pending:
                wake.wait()
                wake.clear()
                continue
            if self._lead_seen or not read_lock.acquire(blocking=False):
                # A caller reads replies itself, or did a moment ago: stand by, and take
                # over once nobody has for LEAD_GRACE. Then send what waits in the outbox.
                self._lead_seen = False
                self._standby = True
                wake.wait(LEAD_GRACE)
                wake.clear()
                with self._lock:
                    self._standby = False
                    out, self._outbox = self._outbox, []
                self._send_frames(out)
                continue
            try:
                self._reader = ident
                self._reading = True  # submit() need not wake us while this holds
                # A waiter that wants to read itself sets _lead_seen and rings: the
                # socket is its at once.
                has_frame = self._data_reader.has_frame
                while self._pending and not self._failed_all and not self._lead_seen:
                    if not has_frame() and not self._wait_readable():
                        continue
                    if not self._read_one():
                        return
            finally:
                # Cleared before the loop re-checks _pending: a submit() that saw
                # _reading still True registered before that check, so it is seen.
                self._reading = False
                self._reader = None
                read_lock.release()
                self._call_wanting()

    def _read_one(self, nowait: bool = False) -> bool | None:
        """Read and route one message (holding ``_read_lock``); False once the channel is
        finished (end of stream or a protocol error, and every call failed); None
        (``nowait``) when no whole message has arrived."""
        try:
            try:
                frame = self._data_reader.read(nowait)
                if frame is NOT_READY:
                    return None
            except (OSError, TruncatedFrame):
                # ECONNRESET (it died with our data unread) or a frame cut off by the end of
                # stream (it died while writing): the worker is gone; on_broken says how.
                frame = None
            if frame is None:
                self._fail_all(None)
                return False
            ep = self._endpoint
            try:
                msg = self._data_decode(frame)
            finally:
                ep.decoded += 1
            if ep.deferred:  # a Release that waited for this frame (endpoint.py)
                ep.apply_deferred()
            kind = type(msg)
            if (kind is m.Done or kind is m.InCredit) and msg.release is not None:
                self.shm.apply(msg.release)  # (also for a call that ended meanwhile)
            unrebuilt = self._unrebuilt
            sink = self._pending.get(msg.id)
            if sink is None:
                if msg.id > self._last_id or msg.id <= 0:
                    raise ProtocolError(f"worker sent {type(msg).__name__} for call "
                                        f"{msg.id}, which was never made")
                return True  # a late message of a call that already ended
            if not sink._sent:
                raise ProtocolError(f"worker sent {type(msg).__name__} for call {msg.id}, "
                                    "which was not sent to it yet")
            if unrebuilt:
                self._refuse_unrebuilt(msg, sink)
            elif kind is m.Done:
                self._end(msg.id, msg.value, msg.run_time)
            elif kind is m.Failed:
                self._end(msg.id, info=msg.error)
            else:
                try:
                    if kind is m.Chunk:
                        sink._chunk(msg.value)
                    elif kind is m.InCredit:
                        if sink._feed is not None:  # (None: a cancelled call's placeholder)
                            sink._feed.credit(msg.slot, msg.n)
                    else:
                        sink._event(msg)
                except Exception as exc:  # noqa: BLE001 - the caller is gone (its loop closed)
                    self.cancel(sink, exc)
            return True
        except Exception as exc:  # noqa: BLE001 - anything the worker sent may be garbage
            self._fail_all(_protocol_error(exc))
            return False

    def _end(self, call_id: int, value: Any = None, run_time: float = 0.0,
             info: m.ErrorInfo | None = None, error: BaseException | None = None) -> None:
        """A call's final reply came: end its sink, with ``value``, or with the error
        ``info`` describes (or ``error``). The one place a reply ends a waiter: the sink
        leaves the pending table here and is settled here, whatever building the error
        raises (a worker's description of an error is untrusted too)."""
        # The sink popped under the lock, not one read before: a cancel() may have
        # replaced it with a placeholder meanwhile.
        sink = self._finish(call_id)
        if info is not None:
            try:
                error = self._make_error(sink, info)
            except Exception:  # noqa: BLE001 - still an answer: the plain remote error
                error = RemoteError(str(info.type), str(info.message), str(info.traceback))
        settle(sink, value, run_time, error)

    def _refuse_unrebuilt(self, msg: Any, sink: Any) -> None:
        """``msg`` decoded with values the host cannot rebuild in it: fail its call alone
        with UndecodableValue (a Done or Failed ends it; a chunk or metric cancels it in
        the worker, which goes on serving)."""
        first = self._unrebuilt[0]
        self._unrebuilt.clear()
        kind = type(msg)
        if type(sink) is _Abandoned and kind is not m.Done and kind is not m.Failed:
            return  # a cancelled call: dropped like everything else it sends
        what = {m.Done: "the result", m.Chunk: "a chunk"}.get(kind) or (
            f"metric {msg.name!r}" if kind is m.Metric else f"its {kind.__name__} message")
        where = find_placeholder(getattr(msg, "value", None), first, what) or what
        error = UndecodableValue(
            f"call {msg.id} ({sink.method}): {where} is a {first.type_name}, which cannot be "
            f"rebuilt on the host: {first.reason}", type_name=first.type_name, where=where)
        if kind is m.Done or kind is m.Failed:
            self._end(msg.id, error=error)
        else:
            self.cancel(sink, error)

    def _finish(self, call_id: int) -> Any:
        """The call's final reply came: free its place in the window, send what waited
        for it, and return the sink it belonged to."""
        to_send = []
        with self._lock:
            sink = self._pending.pop(call_id, None)
            if sink is None:  # every call was failed meanwhile (the worker was stopped)
                return _Abandoned(call_id, "", 0)
            settled = False
            if type(sink) is _Abandoned:
                self.cancels_pending -= 1
                settled = self.cancels_pending == 0
            self.completed += 1
            timer = sink._timer
            if timer is not None:
                timer.cancel()
            if self._idle_waiters and not self._pending:
                self._idle.notify_all()
            self._in_flight -= 1
            self._in_flight_bytes -= sink._size
            waiting = self._waiting
            while waiting and self._fits(len(waiting[0][1]) + 4):
                cid, payload = waiting.popleft()
                self._in_flight += 1
                self._in_flight_bytes += len(payload) + 4
                queued = self._pending.get(cid)
                if queued is not None:
                    queued._sent = True
                to_send.append(payload)
        self._send_frames(to_send)
        if settled:
            self._on_settled()
        return sink

    # -- cancellation -----------------------------------------------------------------------

    def cancel(self, sink: Any, error: BaseException) -> bool:
        """Fail ``sink`` with ``error`` now and stop its call (see the module docstring).
        False when the call already ended."""
        with self._lock:
            if self._pending.get(sink.id) is not sink:
                return False
            if sink._timer is not None:
                sink._timer.cancel()
            if sink._sent:
                self._pending[sink.id] = _Abandoned(sink.id, sink.method, sink._size)
                self.cancels_pending += 1
            else:  # still waiting on the host: the worker never hears of it
                del self._pending[sink.id]
                self._waiting = deque(e for e in self._waiting if e[0] != sink.id)
                if self._idle_waiters and not self._pending:
                    self._idle.notify_all()
        settle(sink, error=error)
        self._kick_leader(sink)
        if sink._sent:
            try:
                self.send_control(m.Cancel(sink.id))
            except OSError:
                return True  # the worker is gone: the reader fails what is left
            call_id = sink.id
            timers.schedule(self.cancel_grace, lambda: self._check_stopped(call_id))
            if not self._reading and not self._wake.is_set():
                self._wake.set()  # someone must read the worker's word that it stopped
        return True

    def _check_stopped(self, call_id: int) -> None:
        """``cancel_grace`` after a Cancel: a call still not stopped (stuck in C code, or
        code that swallowed the cancellation) costs the worker its life."""
        if type(self._pending.get(call_id)) is _Abandoned and not self._failed_all:
            self._on_overdue(call_id)

    def _read_control(self) -> None:
        try:
            while True:
                try:
                    frame = self._control_reader.read()
                except (OSError, TruncatedFrame):
                    frame = None
                if frame is None:
                    # The worker is gone. Let whoever reads the data socket deliver what
                    # it sent before the end; with nothing pending, report it now.
                    with self._lock:
                        idle = not self._pending
                    if idle:
                        self._fail_all(None)
                    else:
                        self._wake.set()
                    return
                msg = self._control_decoder.decode(frame)
                if type(msg) is m.WorkerLog:
                    self._on_worker_log(msg.stream, msg.text)
                elif type(msg) is m.Release:
                    self._endpoint.on_release(msg)
                elif type(msg) in (m.Pong, m.Ready, m.SetupFailed, m.Description):
                    fut, expected = self._requests.get(msg.seq, (None, ()))
                    if fut is None:
                        raise ProtocolError(f"worker answered control request {msg.seq}, "
                                            "which was never made")
                    if type(msg) not in expected:
                        raise ProtocolError(
                            f"worker answered control request {msg.seq} with "
                            f"{type(msg).__name__}, expected {' or '.join(t.__name__ for t in expected)}")
                    del self._requests[msg.seq]  # (kept until now so that _fail_all fails it)
                    fut.set_result(msg)
                else:
                    raise ProtocolError(f"unexpected {type(msg).__name__} on the control channel")
        except Exception as exc:  # noqa: BLE001
            err = _protocol_error(exc)
            self._fail_all(err)

    # -- control requests -------------------------------------------------------------------

    def request(self, make: Callable[[int], Any], expected: tuple[type, ...]) -> Future:
        """Send a control request built by ``make(seq)``; the future gets its reply, which
        must be one of the ``expected`` message types (anything else is a ProtocolError)."""
        fut: Future = Future()
        with self._lock:
            if self._broken is not None:
                fut.set_exception(self._broken)
                return fut
            seq = next(self._seqs)
            self._requests[seq] = (fut, expected)
        try:
            self.send_control(make(seq))
        except OSError as exc:
            self._requests.pop(seq, None)
            fut.set_exception(exc)
        return fut

    # -- the end ----------------------------------------------------------------------------

    def _fail_all(self, error: BaseException | None) -> None:
        """The worker is gone (``error`` None: end of stream) or broke the protocol: fail
        every call and control request, once."""
        with self._lock:
            if self._failed_all:
                return
            self._failed_all = True
            report = self._broken is None
            if report:
                # Provisional, so that no call registers while on_broken runs.
                self._broken = error or WorkerCrashed("the worker closed its channels")
        if report:
            # on_broken reaps the process and builds what callers get (exit code, stderr).
            self._broken = self._on_broken(error)
        with self._lock:
            sinks = list(self._pending.values())
            self._pending.clear()
            self._idle.notify_all()
            self._waiting.clear()
            requests = list(self._requests.values())
            self._requests.clear()
        self._wake.set()  # let the reader thread see the end and exit
        self.shm.close()  # the worker holds none of our segments any more
        for sink in sinks:
            settle(sink, error=self._broken)
        led = self._led
        if led is not None:
            self._kick_leader(led)
        for fut, _ in requests:
            if not fut.done():
                fut.set_exception(self._broken)
        self._ended.set()

    def close(self, error: BaseException) -> None:
        """Fail what is left with ``error`` (the worker was stopped) and close the sockets."""
        with self._lock:
            if self._broken is None:
                self._broken = error
        for s in (self._data, self._control):
            try:
                s.shutdown(2)
            except OSError:
                pass
        self._fail_all(error)
        self._release_loop_at_close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(5.0)
        kick, self._kick = self._kick, None
        if kick is not None and self._read_lock.acquire(timeout=5.0):
            try:  # (no leader polls them any more)
                self._poll = None
                os.close(kick[0])
                os.close(kick[1])
            finally:
                self._read_lock.release()


class _Abandoned:
    """Stands in for a cancelled call until the worker's final reply: keeps its place in
    the window and drops everything else the worker sends for it."""

    __slots__ = ("id", "method", "_sent", "_size", "_timer", "_finished")
    _feed = None  # (its InCredit are dropped: the feeder stops)

    def __init__(self, call_id: int, method: str, size: int):
        self.id = call_id
        self.method = method
        self._sent = True
        self._size = size
        self._timer = None
        self._finished = True

    def _event(self, event: Any) -> None:
        pass

    def _chunk(self, value: Any) -> None:
        pass

    def _done(self, value: Any, run_time: float) -> None:
        pass

    def _failed(self, exc: BaseException) -> None:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 64):
            pass
    except OSError:  # BlockingIOError: it is empty
        pass


def _protocol_error(exc: BaseException) -> BaseException:
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, FrameError):
        return ProtocolError(f"bad frame from worker: {exc}")
    return ProtocolError(f"undecodable message from worker: {type(exc).__name__}: {exc}")


def too_large(size: int, limit: int) -> ValueError:
    return ValueError(f"the call's arguments make a frame of {size} bytes, which exceeds the "
                      f"frame limit of {limit} bytes (max_frame); big bytes and arrays cross "
                      "through shared memory, other values must fit")
