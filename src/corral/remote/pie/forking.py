"""The host's half of the fork server (zygote.py): start it, ask it for worker processes.

``Zygote(python, env).spawn(max_frame)`` returns a :class:`ForkedProcess`, which has the
interface ``corral.Worker`` expects of its process (host/process.py's ``WorkerProcess``):
sockets, stderr tail, wait, terminate, kill. The process is the zygote's child, not ours, so
it is waited for through the pidfd the zygote sends and its exit code comes from the zygote's
``exit`` message.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading

from ...exceptions import WorkerStartupError
from ...host.process import STDERR_TAIL_LINES, WorkerProcess, _spawner

log = logging.getLogger("corral.pie")

READY_TIMEOUT = 60.0
SPAWN_TIMEOUT = 10.0


class Zygote:
    """One fork server, for one interpreter and environment."""

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None):
        self.python = python or sys.executable
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        full_env = dict(os.environ)
        full_env.update(env or {})
        argv = [self.python, "-m", "corral.remote.pie.zygote",
                "--socket-fd", str(theirs.fileno()), "--parent-pid", str(os.getpid())]
        try:
            # Forked by corral's spawner thread, so PR_SET_PDEATHSIG ties it to this process.
            self.popen = _spawner.run(lambda: subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, pass_fds=(theirs.fileno(),), env=full_env,
                start_new_session=True))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        self._lock = threading.Lock()  # one spawn request at a time
        self._replies: collections.deque = collections.deque()
        self._reply = threading.Condition()
        self._exits: dict[int, int] = {}
        self._exited = threading.Condition()
        self._closed = False
        ours.settimeout(READY_TIMEOUT)
        try:
            first = ours.recv(64)
        except OSError as exc:
            self.close()
            raise WorkerStartupError(f"the fork server ({self.python}) did not start: {exc}") \
                from exc
        if first != b"ready":
            err = self.popen.stderr.read().decode("utf-8", "replace")[-2000:] \
                if self.popen.poll() is not None else ""
            self.close()
            raise WorkerStartupError(f"the fork server ({self.python}) did not start: {err}")
        ours.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="corral-pie-zygote",
                                        daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(self._sock, 256, 1)
            except OSError:
                msg, fds = b"", []
            if not msg:
                with self._reply:
                    self._closed = True
                    self._reply.notify_all()
                with self._exited:
                    self._exited.notify_all()
                return
            words = msg.split()
            if words[0] == b"exit" and len(words) == 3:
                with self._exited:
                    self._exits[int(words[1])] = int(words[2])
                    self._exited.notify_all()
            else:
                with self._reply:
                    self._replies.append((msg, fds))
                    self._reply.notify_all()

    def spawn(self, max_frame: int) -> "ForkedProcess":
        """A new worker process forked from the zygote (not yet through the handshake)."""
        return ForkedProcess(self, max_frame)

    def _request(self, max_frame: int, fds: list[int]) -> tuple[int, int]:
        with self._lock:
            socket.send_fds(self._sock, [b"spawn %d" % max_frame], fds)
            with self._reply:
                if not self._reply.wait_for(lambda: self._replies or self._closed,
                                            SPAWN_TIMEOUT):
                    raise WorkerStartupError("the fork server did not answer in time")
                if not self._replies:
                    raise WorkerStartupError("the fork server is gone")
                msg, got = self._replies.popleft()
        words = msg.split()
        if words[0] != b"pid" or len(got) != 1:
            for fd in got:
                os.close(fd)
            raise WorkerStartupError(f"the fork server refused: {msg!r}")
        return int(words[1]), got[0]

    def exit_code(self, pid: int, wait: float) -> int | None:
        with self._exited:
            self._exited.wait_for(lambda: pid in self._exits or self._closed, wait)
            return self._exits.get(pid)

    def forget(self, pid: int) -> None:
        with self._exited:
            self._exits.pop(pid, None)

    @property
    def alive(self) -> bool:
        return not self._closed and self.popen.poll() is None

    def close(self) -> None:
        """Stop the fork server (the workers it forked live on until stopped)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        if self.popen.stderr is not None:
            self.popen.stderr.close()


class ForkedProcess:
    """A worker process forked by a Zygote, with WorkerProcess's interface."""

    def __init__(self, zygote: Zygote, max_frame: int):
        control_host, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        data_host, data_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds_host, fds_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        err_r, err_w = os.pipe()
        os.set_inheritable(err_r, False)
        self.control, self.data, self.fds = control_host, data_host, fds_host
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._zygote = zygote
        self.host_pid = os.getpid()
        self.returncode: int | None = None
        try:
            self.pid, self._pidfd = zygote._request(
                max_frame, [control_child.fileno(), data_child.fileno(), fds_child.fileno(),
                            err_w])
        except BaseException:
            for s in (control_host, data_host, fds_host):
                s.close()
            os.close(err_r)
            raise
        finally:
            control_child.close()
            data_child.close()
            fds_child.close()
            os.close(err_w)
        self._stderr = os.fdopen(err_r, "rb")
        self._stderr_thread = threading.Thread(
            target=self._read_stderr, name=f"corral-stderr-{self.pid}", daemon=True)
        self._stderr_thread.start()

    def _read_stderr(self) -> None:
        for raw in self._stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            log.debug("[pie worker %s stderr] %s", self.pid, line)
        self._stderr.close()

    keeper = None  # forked by the zygote, not under a keeper: kill_group ends its group
    keeper_pid = None

    def poll(self) -> int | None:
        """The exit code once wait() has seen it, else None; never blocks."""
        return self.returncode

    note_output = WorkerProcess.note_output
    rss_bytes = WorkerProcess.rss_bytes

    def stderr_tail(self, wait: float = 1.0) -> str:
        if self.returncode is not None:
            self._stderr_thread.join(wait)
        return "\n".join(self.tail)

    def wait(self, timeout: float | None) -> int | None:
        """The exit code, or None if it still runs after ``timeout`` seconds."""
        if self.returncode is not None:
            return self.returncode
        pidfd = self._pidfd
        if pidfd is None:
            return self.returncode
        try:
            ready, _, _ = select.select([pidfd], [], [], timeout)
        except (OSError, ValueError):
            ready = [pidfd]
        if not ready:
            return None
        code = self._zygote.exit_code(self.pid, 2.0)
        self.returncode = code if code is not None else -signal.SIGKILL
        return self.returncode

    def _signal(self, sig: int) -> None:
        pidfd = self._pidfd
        if pidfd is None or self.returncode is not None:
            return
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except (ProcessLookupError, OSError):
            pass

    def terminate(self, grace: float) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if os.getpid() != self.host_pid:
            return 0
        self._signal(signal.SIGTERM)
        if self.wait(grace) is None:
            self.kill()
        self.kill_group()
        return self.wait(None) or 0

    def kill(self) -> None:
        """SIGKILL it and its process group, and wait for its end."""
        if os.getpid() != self.host_pid:
            return
        self.kill_group()
        self._signal(signal.SIGKILL)
        self.wait(None)

    kill_group = WorkerProcess.kill_group  # no keeper: its process group

    def close(self) -> None:
        WorkerProcess.close(self)  # type: ignore[arg-type]
        self._zygote.forget(self.pid)

    def __repr__(self) -> str:
        return f"<ForkedProcess pid={self.pid}>"
