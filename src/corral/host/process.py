"""Start a worker process with its sockets, keep the tail of its stderr, reap it.

On Linux the process started here splits in two (corral/worker/keeper.py): a keeper, the
child of the host and a child subreaper, and under it the worker. Whatever the worker starts
stays under the keeper, which kills all of it when the worker ends, when the host goes, or
when asked (``kill_group``); ``popen`` is the keeper's, and its exit status is the worker's.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Callable

from .._workerstart import XOPTION

log = logging.getLogger("corral.worker")

STDERR_TAIL_LINES = 40

#: Start workers under a keeper (module switch: a benchmark measures with and without).
KEEPER = sys.platform.startswith("linux")

#: How long to wait for a started process to say which pid is its worker (as long as the
#: host waits for a Hello: it is the same wait, cut in two).
KEEPER_TIMEOUT = 30.0


def describe_exit(code: int | None) -> tuple[str, str | None]:
    """``(text, signal_name)`` for an exit code: ``"killed by SIGKILL (-9)"`` or
    ``"exit code 3"``."""
    if code is None:
        return "still running", None
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} ({code})", name
    return f"exit code {code}", None


class _Spawner:
    """The one thread that forks every worker. PR_SET_PDEATHSIG fires when the thread that
    forked the child ends, not the process: from a caller's thread (``async with`` starts
    workers through asyncio.to_thread) or a restart's thread, the worker would die with that
    thread, so those used to go without. This thread lives as long as the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue | None = None
        self._pid = 0

    def run(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: its own thread
                self._requests = queue.SimpleQueue()
                threading.Thread(target=self._serve, args=(self._requests,),
                                 name="corral-spawner", daemon=True).start()
                self._pid = os.getpid()
            requests = self._requests
        done = threading.Event()
        box: list = []
        requests.put((fn, box, done))
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    @staticmethod
    def _serve(requests: queue.SimpleQueue) -> None:
        while True:
            fn, box, done = requests.get()
            try:
                box.append((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                box.append((False, exc))
            done.set()
            del fn, box, done


_spawner = _Spawner()
_live: "weakref.WeakSet[WorkerProcess]" = weakref.WeakSet()


def _close_in_forked_child() -> None:
    # A child forked by the host (without exec) inherits the host's ends of every worker's
    # sockets: while it lived, a worker would never see its host go. Close them there.
    for proc in list(_live):
        for sock in (proc.control, proc.data, proc.fds, proc.keeper):
            try:
                if sock is not None:
                    sock.close()
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_forked_child)


def _parent_of(pid: int) -> int | None:
    """The parent pid of ``pid``, None if it cannot be read (it ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2:].split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


class WorkerProcess:
    """One worker OS process: its control and data sockets, its stderr tail, its exit."""

    def __init__(self, python: str | None, env: dict[str, str] | None, max_frame: int,
                 cwd: str | None = None):
        control_host, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        data_host, data_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Shared-memory segment descriptors cross here, one datagram each (protocol/shm.py).
        fds_host, fds_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control = control_host
        self.data = data_host
        self.fds = fds_host
        # The host's end of the keeper's socket: the keeper ends everything when it closes.
        keeper_host, keeper_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) \
            if KEEPER else (None, None)
        self.keeper: socket.socket | None = keeper_host
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        argv = [
            python or sys.executable, "-X", XOPTION, "-m", "corral.worker",
            "--control-fd", str(control_child.fileno()),
            "--data-fd", str(data_child.fileno()),
            "--fds-fd", str(fds_child.fileno()),
            "--parent-pid", str(os.getpid()),
            # Linux ties PR_SET_PDEATHSIG to the *thread* that forks: every worker is
            # forked by one long-lived thread (_spawner), so it dies with the process only.
            "--die-with-parent",
            "--max-frame", str(max_frame),
        ]
        passed = [control_child.fileno(), data_child.fileno(), fds_child.fileno()]
        if keeper_child is not None:
            argv += ["--keeper-fd", str(keeper_child.fileno())]
            passed.append(keeper_child.fileno())
        try:
            self.popen = _spawner.run(lambda: subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=passed,
                env=full_env,
                cwd=cwd,
                # Its own session: a Ctrl-C in the host's terminal reaches the host, which
                # then stops its workers in order, instead of killing them mid-call.
                start_new_session=True,
            ))
        except BaseException:
            for s in (control_host, data_host, fds_host, keeper_host):
                if s is not None:
                    s.close()
            raise
        finally:
            for s in (control_child, data_child, fds_child, keeper_child):
                if s is not None:
                    s.close()
        self.host_pid = os.getpid()
        #: The worker's pid (under its keeper, or the started process itself).
        self.pid = self.popen.pid
        if self.keeper is not None:
            try:
                worker_pid = self._await_worker_pid(self.keeper)
            except BaseException:  # (a KeyboardInterrupt): the end of its sockets ends it
                for s in (control_host, data_host, fds_host, keeper_host):
                    s.close()
                raise
            if worker_pid is None:  # no keeper: the process is the worker (or broke)
                self.keeper.close()
                self.keeper = None
            else:
                self.pid = worker_pid
        #: The keeper's pid, when the worker runs under one.
        self.keeper_pid = self.popen.pid if self.keeper is not None else None
        try:  # (Linux >= 5.3) readable once the process (the keeper: last) has exited
            self._pidfd: int | None = os.pidfd_open(self.popen.pid)
        except (AttributeError, OSError):
            self._pidfd = None
        _live.add(self)
        self._stderr_thread = threading.Thread(
            target=self._read_stderr, name=f"corral-stderr-{self.pid}", daemon=True)
        self._stderr_thread.start()

    def _await_worker_pid(self, keeper: socket.socket) -> int | None:
        """The pid the worker writes on the keeper socket before its Hello, or None when
        there is no keeper: the process said it is the worker itself (no subreaper), its
        Hello came first (a worker that does not know keepers), it ended, it said nothing
        for KEEPER_TIMEOUT (the Hello's own timeout then applies), or it wrote garbage."""
        deadline = time.monotonic() + KEEPER_TIMEOUT
        poller = select.poll()  # (not select(): a busy host's descriptors may pass 1023)
        poller.register(keeper, select.POLLIN)
        poller.register(self.control, select.POLLIN)
        said = b""
        while not said.endswith(b"\n"):
            left = max(0.0, deadline - time.monotonic())
            try:
                ready = {fd for fd, _ in poller.poll(left * 1000)}
                if keeper.fileno() not in ready:
                    return None  # a Hello without a pid first, or silence
                chunk = keeper.recv(32)
            except OSError:
                return None
            said += chunk
            if not chunk or len(said) > 24:
                return None
        try:
            pid = int(said)
        except ValueError:
            return None
        if pid <= 0 or pid == self.popen.pid or _parent_of(pid) not in (self.popen.pid, None):
            return None  # itself, or not a child of the process started here
        return pid

    def _read_stderr(self) -> None:
        stream = self.popen.stderr
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            log.debug("[worker %s stderr] %s", self.pid, line)
        stream.close()

    def note_output(self, stream: str, text: str) -> None:
        """Output the worker wrote outside any call (it goes into the stderr tail too)."""
        self.tail.append(text)
        log.info("[worker %s %s] %s", self.pid, stream, text)

    def stderr_tail(self, wait: float = 1.0) -> str:
        """The last lines the worker wrote; after it exited, waits briefly for the pipe's end
        so that a fatal error's last words are included."""
        if self.popen.poll() is not None:
            self._stderr_thread.join(wait)
        return "\n".join(self.tail)

    def poll(self) -> int | None:
        """The exit code if the process has been reaped, else None; never blocks (safe in
        a signal handler)."""
        return self.popen.poll()

    def wait(self, timeout: float | None) -> int | None:
        """The exit code, or None if it still runs after ``timeout`` seconds. Waits on a
        pidfd where there is one: Popen.wait(timeout) polls with growing sleeps, which
        costs milliseconds on every crash."""
        pidfd = self._pidfd
        if timeout is not None and pidfd is not None and self.popen.returncode is None:
            try:
                ready, _, _ = select.select([pidfd], [], [], timeout)
            except (OSError, ValueError):
                ready = [pidfd]  # closed meanwhile: fall back to Popen's own wait
            if not ready:
                return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, grace: float) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if os.getpid() != self.host_pid:
            return 0  # a forked child of the host: its parent's worker, not its own
        if self.popen.poll() is None:
            try:
                self.popen.terminate()
            except ProcessLookupError:
                pass
            if self.wait(grace) is None:
                self.kill()
        self.kill_group()
        return self.popen.wait()

    def kill(self) -> None:
        """SIGKILL the worker and whatever it started (a subprocess the model code launched
        must not outlive it; see kill_group), then reap it."""
        if os.getpid() != self.host_pid:
            return
        self.kill_group()
        self.popen.wait()

    def kill_group(self) -> None:
        """SIGKILL the worker and everything it started. Under a keeper: the end of its
        socket, and the keeper kills every descendant, however detached (it does not wait
        for that: ``wait()`` returns once it is done). Without one: the worker's process
        group, which is safe after the worker died but before it was reaped, and after: the
        group id cannot be reused while any member lives."""
        if os.getpid() != self.host_pid:
            return  # a forked child of the host: these are its parent's workers
        keeper = self.keeper
        if keeper is not None:
            try:  # (shutdown, not close: a dup in a forked child must not keep it open)
                keeper.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the keeper ended already
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """Release the sockets and the stderr pipe; the process must have exited."""
        for s in (self.control, self.data, self.fds, self.keeper):
            try:
                if s is not None:
                    s.close()
            except OSError:
                pass
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            os.close(pidfd)
        self._stderr_thread.join(2.0)

    def rss_bytes(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None
