"""The fork server: a process with corral's worker and the guest imported, forking workers.

A cold ``python -m corral.worker`` costs 70-130 ms on these machines (interpreter start,
imports); a fork of this process costs about a millisecond, and the child is a corral worker
at once. The host (forking.py) starts one per environment, with that environment's
interpreter::

    python -m corral.remote.pie.zygote --socket-fd N --parent-pid P

Protocol, over a ``SOCK_SEQPACKET`` socket (one message per datagram):

- zygote -> host ``b"ready"`` once imported;
- host -> zygote ``b"spawn <max_frame>"`` with four descriptors (SCM_RIGHTS): the child's
  control, data and shared-memory sockets and the write end of its stderr pipe;
- zygote -> host ``b"pid <pid>"`` with the child's pidfd (race-free waiting: the zygote
  opens it before it can reap the child);
- zygote -> host ``b"exit <pid> <code>"`` when a child ends (negative: killed by a signal).

The zygote is single-threaded (forking a threaded process is unsafe) and dies with its
host (PR_SET_PDEATHSIG, and the end of its socket). A child runs in its own session, like
every corral worker, and exits when its control socket ends, i.e. when its host is gone.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys

MAX_FDS = 4


def _child(fds: list[int], max_frame: int, keep_closed: list[int]) -> None:
    for fd in keep_closed:
        try:
            os.close(fd)
        except OSError:
            pass
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    control, data, shm, err = fds
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(err, 2)
    os.close(devnull)
    os.close(err)
    code = 0
    try:
        from corral.worker.main import WorkerProcess

        WorkerProcess(control, data, shm, max_frame).run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child's last words go to its stderr
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001
            pass
        os._exit(code)


def serve(sock: socket.socket) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sock.send(b"ready")
    while True:
        ready, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            _reap(sock)
        if sock in ready:
            try:
                msg, fds, _, _ = socket.recv_fds(sock, 256, MAX_FDS)
            except OSError:
                return
            if not msg:
                return  # the host is gone
            words = msg.split()
            if len(words) != 2 or words[0] != b"spawn" or len(fds) != MAX_FDS:
                for fd in fds:
                    os.close(fd)
                sock.send(b"bad " + msg[:64])
                continue
            pid = os.fork()
            if pid == 0:
                _child(fds, int(words[1]), [sock.fileno(), wake_r, wake_w])
            for fd in fds:
                os.close(fd)
            pidfd = os.pidfd_open(pid)
            try:
                socket.send_fds(sock, [b"pid %d" % pid], [pidfd])
            finally:
                os.close(pidfd)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        try:
            sock.send(b"exit %d %d" % (pid, code))
        except OSError:
            return


def main(argv: list[str]) -> None:
    args = dict(zip(argv[::2], argv[1::2]))
    parent = int(args["--parent-pid"])
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)
    # What every child needs, imported once here.
    import asyncio  # noqa: F401
    import concurrent.futures.thread  # noqa: F401

    # What was imported stays shared with the children: no collection walks (and so
    # copies) those pages in every child.
    import gc
    import json  # noqa: F401
    import linecache  # noqa: F401
    import traceback  # noqa: F401

    import corral.protocol.shm  # noqa: F401
    import corral.worker.inputs  # noqa: F401
    import corral.worker.main  # noqa: F401
    import corral.worker.runner  # noqa: F401
    from corral.remote.pie import guest  # noqa: F401

    gc.collect()
    gc.freeze()
    serve(socket.socket(fileno=int(args["--socket-fd"])))


if __name__ == "__main__":
    main(sys.argv[1:])
