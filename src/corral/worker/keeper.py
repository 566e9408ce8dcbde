"""The keeper: a small process between the host and the worker, so that nothing the model
starts outlives the worker.

The host starts ``python -m corral.worker --keeper-fd N ...``; before anything else, that
process marks itself a child subreaper (PR_SET_CHILD_SUBREAPER) and forks. The child goes on
to be the worker; the parent stays behind as the keeper. Every process the worker starts,
however it detaches (a plain fork, a double fork, ``setsid``/``start_new_session=True``, a
daemon), stays a descendant of the keeper: an orphan is re-parented to its nearest subreaper,
not to init. When the worker ends, or the host goes (the end of the keeper socket, or
PR_SET_PDEATHSIG), or the host closes that socket to ask for it, the keeper SIGKILLs every
descendant it has, reaps them, and exits with the worker's own exit status, so that the
host's ``Popen.wait()`` says how the worker ended and returns only once nothing is left.

The keeper forwards SIGTERM to the worker (``Popen.terminate()``), ignores SIGINT and reaps
orphans as they end (no zombies pile up). Forked from the worker's interpreter, it costs no
start of its own, but it keeps the copy-on-write original of every page the worker goes on
to write; so once the worker has run SLIM_AFTER_S, it execs a bare interpreter on this file
(``python -I -S keeper.py``: the stdlib only) and holds a few MiB of its own from then on.
The subreaper mark, PR_SET_PDEATHSIG, its socket, its children and the blocked signals (with
any pending) carry across the exec.

Limits: a process started *outside* the tree on the model's behalf (``systemd-run``, ``at``,
a D-Bus activated service, a container daemon) is not a descendant; a descendant running as
another user (a set-user-ID program such as ``sudo``) may refuse the keeper's SIGKILL, and
the keeper gives up on it after ``GIVE_UP_S``; and a SIGKILL of the keeper itself ends the
worker (its PR_SET_PDEATHSIG) but not what the worker detached.

Linux only (the host does not ask for it elsewhere); stdlib only, like the rest of the
worker side.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

#: How long after the fork the keeper execs a bare interpreter (after the worker's start,
#: which it would otherwise slow down, for most targets).
SLIM_AFTER_S = 1.0

#: How long the keeper keeps trying to end descendants that refuse to die (another user's
#: processes; a process in uninterruptible sleep) before it exits and leaves them.
GIVE_UP_S = 10.0

#: Signals the keeper handles itself: the worker's end and orphans' (SIGCHLD), a terminate
#: to forward (SIGTERM), its host's death (SIGHUP, by PR_SET_PDEATHSIG).
_HANDLED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP}


def _prctl(option: int, arg: object) -> bool:
    import ctypes

    if isinstance(arg, int):
        arg = ctypes.c_ulong(arg)
    zero = ctypes.c_ulong(0)  # (a bare int would go as a C int)
    try:
        return ctypes.CDLL(None).prctl(option, arg, zero, zero, zero) == 0
    except (OSError, AttributeError):
        return False


def split(keeper_fd: int, host_pid: int, worker_fds: tuple[int, ...]) -> int:
    """Become the keeper and fork the worker; returns, in the worker, the keeper's pid (its
    parent, to die with). The keeper itself never returns.

    ``keeper_fd`` is the keeper's end of a socket to the host: the worker writes its own pid
    on it (before its Hello, so the host reads the pid first), then closes it there; the
    keeper reads its end (EOF: the host is gone or asks for the end). ``worker_fds`` are the
    worker's sockets, which the keeper closes. Without a subreaper (not Linux, a kernel
    older than 3.4) nothing is forked: the process goes on as the worker itself and says
    so by writing its own pid."""
    if not _prctl(PR_SET_CHILD_SUBREAPER, 1):
        _report(keeper_fd)
        os.close(keeper_fd)
        return host_pid
    # Blocked across the fork: the keeper must not miss the worker's end, and must not be
    # ended by a SIGTERM before it can forward it.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    _prctl(PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != host_pid:  # the host died before that took effect
        os._exit(0)
    keeper_pid = os.getpid()
    worker_pid = os.fork()
    if worker_pid == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        # Its own process group: a model that signals its group (``killpg(0, ...)``) does
        # not reach the keeper.
        os.setpgid(0, 0)
        _report(keeper_fd)
        os.close(keeper_fd)
        return keeper_pid
    try:
        for fd in worker_fds:
            os.close(fd)
        import ctypes

        # Its name in ps/top until the exec gives it a command line of its own.
        _prctl(PR_SET_NAME, ctypes.create_string_buffer(b"corral-keeper"))
        _keep(keeper_fd, host_pid, worker_pid, slim=True)
    finally:
        os._exit(70)  # (only if _keep itself failed: it exits with the worker's status)


def _report(keeper_fd: int) -> None:
    try:
        os.write(keeper_fd, b"%d\n" % os.getpid())
    except OSError:
        pass  # the host is gone: the keeper ends us


class _Keeper:
    def __init__(self, host_fd: int, host_pid: int, worker_pid: int, slim: bool):
        self.slim_at = time.monotonic() + SLIM_AFTER_S if slim else None
        self.host_fd = host_fd
        self.host_pid = host_pid
        self.worker_pid = worker_pid
        self.status: int | None = None  # the worker's wait status, once reaped
        self.pending: set[int] = set()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in _HANDLED:
            signal.signal(sig, self._note)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)

    def _note(self, signum: int, frame: object) -> None:
        self.pending.add(signum)

    def _wait(self, fds: list[int], timeout: float | None) -> list[int]:
        # poll, not select: the socket keeps the number it had in the host, maybe > 1023.
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        ready = [fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)]
        if self.wake_r in ready:
            try:
                while os.read(self.wake_r, 64):
                    pass
            except BlockingIOError:
                pass
        return ready

    def reap(self) -> bool:
        """Reap every child that ended; False once there is no child left at all. The
        worker's process group is killed as the worker is found dead, before it is reaped:
        while it is a zombie its pid, the group's id, cannot be anyone else's."""
        while True:
            try:  # (look first, reap after)
                ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return False
            if ended is None:
                return True
            if ended.si_pid == self.worker_pid:
                self.kill_group()
            pid, status = os.waitpid(ended.si_pid, 0)  # (it has ended: at once)
            if pid == self.worker_pid:
                self.status = status

    def kill_group(self) -> None:
        """SIGKILL the worker's process group (not after the worker is reaped)."""
        try:
            os.killpg(self.worker_pid, signal.SIGKILL)
        except OSError:
            pass

    def host_gone(self) -> bool:
        try:
            return os.read(self.host_fd, 64) == b""  # (the host never writes: EOF only)
        except OSError:
            return True

    def watch(self) -> None:
        """Until the worker ends or the host goes (or asks for the end)."""
        while True:
            self.reap()
            if self.status is not None:
                return
            if signal.SIGHUP in self.pending:
                self.pending.discard(signal.SIGHUP)
                if os.getppid() != self.host_pid:
                    return
            if signal.SIGTERM in self.pending:
                self.pending.discard(signal.SIGTERM)
                # Not reaped (reap() just ran): even if it ended meanwhile, a zombie keeps
                # its pid, so this cannot reach another process.
                try:
                    os.kill(self.worker_pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            self.pending.discard(signal.SIGCHLD)
            timeout = None if self.slim_at is None else max(0.0, self.slim_at - time.monotonic())
            ready = self._wait([self.host_fd, self.wake_r], timeout)
            if self.host_fd in ready and self.host_gone():
                return
            if not ready and self.slim_at is not None:
                self.slim()

    def slim(self) -> None:
        """Exec a bare interpreter to go on as the keeper there; on failure, go on here."""
        self.slim_at = None
        if not os.path.exists(__file__):
            return
        # Blocked across the exec: what arrives meanwhile waits for the new image's handlers
        # (SIGINT stays ignored: an ignored signal stays so across exec).
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:  # a signal caught but not handled yet would be lost: then later
            tripped = os.read(self.wake_r, 64)
        except BlockingIOError:
            tripped = b""
        self.reap()
        if tripped or self.status is not None or self.pending - {signal.SIGCHLD}:
            self.slim_at = time.monotonic() + 0.1
        else:
            try:
                os.execv(sys.executable, [sys.executable, "-I", "-S", __file__,
                                          str(self.host_fd), str(self.host_pid),
                                          str(self.worker_pid)])
            except OSError:
                pass  # go on in this process
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)

    def end_all(self) -> None:
        """SIGKILL every descendant, again as orphans come back to us, until none is left
        (or only ones that refuse to die, for GIVE_UP_S)."""
        me = os.getpid()
        deadline = time.monotonic() + GIVE_UP_S
        if self.status is None:  # the worker's group (what it did not detach; no /proc)
            self.kill_group()
        while self.reap():
            for pid in descendants(me):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass  # gone, or not ours to signal
            if time.monotonic() > deadline:
                return
            # Woken by the next SIGCHLD; looks again every 50 ms for what a dying process
            # forked at the last moment.
            self._wait([self.wake_r], 0.05)

    def exit_like_the_worker(self) -> None:
        status = self.status
        if status is None:
            os._exit(0)  # the host is gone: nobody reads this
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            try:
                import resource

                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core of ours
            except (ImportError, ValueError, OSError):
                pass
            signal.set_wakeup_fd(-1)
            try:
                signal.signal(sig, signal.SIG_DFL)  # (SIGKILL has no handler to reset)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
            except (OSError, ValueError):
                pass
            os.kill(os.getpid(), sig)
            os._exit(128 + sig)
        os._exit(os.waitstatus_to_exitcode(status))


def _keep(host_fd: int, host_pid: int, worker_pid: int, slim: bool = False) -> None:
    gc.disable()  # nothing here makes cycles (and, not exec'd, it would copy every page)
    keeper = _Keeper(host_fd, host_pid, worker_pid, slim)
    keeper.watch()
    keeper.end_all()
    keeper.exit_like_the_worker()


def descendants(root: int) -> list[int]:
    """Every process below ``root``, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # ended meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split(b" ", 2)
        try:
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (IndexError, ValueError):
            continue
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


if __name__ == "__main__":  # exec'd by split(): python -I -S keeper.py HOST_FD HOST_PID PID
    try:
        _keep(*(int(arg) for arg in sys.argv[1:4]))
    finally:
        os._exit(70)
