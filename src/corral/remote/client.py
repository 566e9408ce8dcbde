"""``corral.connect(url, token=...)``: a session with a ``corral host``.

::

    with corral.connect("ws://gpu-box:7070", token=TOKEN) as s:
        prog = s.upload("model/")              # chunked, hash-checked, skipped if known
        with s.launch(prog, target="model.py:Model", slots=2) as w:
            w.predict(x)                        # the local Worker's call surface
            for chunk in w.stream("generate", prompt):
                ...

``aconnect`` is the asyncio twin (``await s.upload(...)``...; the workers it gives have
``acall``/``astream``/``awatch`` as every worker does).
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
from typing import Any, Callable

import blake3
import msgspec

from . import bundles, protocol as p
from .errors import InstanceNotFound
from .link import Link
from .worker import RemoteWorker


class Program(msgspec.Struct, frozen=True):
    """An uploaded bundle: ``id`` is its blake3 hash, the name to launch it by."""

    id: str
    name: str = ""
    size: int = 0
    uploaded: bool = False  # False when the server had it already


class Session:
    """A connection to a ``corral host`` (see ``connect``). Instances launched in it end
    when it is closed, unless launched (or later marked) detached."""

    def __init__(self, url: str, *, token: str | None = None, identity: str | None = None,
                 open_timeout: float = 10.0):
        if token is None:
            token = os.environ.get("CORRAL_TOKEN") or None
        #: The client's secret identity key: keep it to ``attach`` to detached instances
        #: from a later session (``connect(url, identity=...)``).
        self.identity = identity or secrets.token_urlsafe(24)
        self._link = Link(url, token=token, identity=self.identity, open_timeout=open_timeout)
        self.url = self._link.url
        self.limits = self._link.limits
        self._workers: list[RemoteWorker] = []

    def __repr__(self) -> str:  # never show the token or the identity key
        return f"<corral.remote.Session {self.url} session={self._link.session_id}>"

    def _ask(self, make: Any, kind: Any = None, timeout: float | None = None) -> Any:
        raw, _ = self._link.request(make, timeout)
        return msgspec.msgpack.decode(raw, type=kind) if kind is not None \
            else msgspec.msgpack.decode(raw)

    # -- programs ---------------------------------------------------------------------------

    def upload(self, path: str | os.PathLike, *, chunk_size: int = p.CHUNK_SIZE) -> Program:
        """Upload a ``.py`` file or a folder as a program; returns it (its id is the blake3
        hash of the bundle). Nothing is sent when the server has it already. Raises
        UploadError when the server refuses it (size limits, unsafe members)."""
        data = bundles.pack(path)
        digest = blake3.blake3(data).hexdigest()
        name = os.path.basename(os.path.normpath(str(path)))
        chunks = max(1, math.ceil(len(data) / chunk_size))
        link = self._link
        begin = link.begin_request(lambda seq: p.UploadBegin(seq, digest, len(data), chunks,
                                                             name))
        raw, _ = link.wait(begin, None)
        answer = msgspec.msgpack.decode(raw)
        if answer.get("have"):
            return Program(digest, name, len(data), False)
        upload = begin.seq  # type: ignore[attr-defined]
        view = memoryview(data)
        # Every chunk carries one sequence number: the server answers the upload once,
        # after the last chunk or at the first one it refuses.
        fut = link.begin_request(lambda seq: p.UploadChunk(seq, upload, 0,
                                                           bytes(view[:chunk_size])))
        for index in range(1, chunks):
            if fut.done():  # refused early: stop sending
                break
            part = bytes(view[index * chunk_size:(index + 1) * chunk_size])
            link.send_more(p.UploadChunk(fut.seq, upload, index, part))  # type: ignore
        raw, _ = link.wait(fut, None)
        info = msgspec.msgpack.decode(raw)
        return Program(info["program"]["program"], name, len(data), True)

    # -- instances --------------------------------------------------------------------------

    def launch(self, program_or_target: Program | str, *, target: str | None = None,
               config: dict[str, Any] | None = None, slots: int = 1, workers: int = 1,
               requirements: list[str] | None = None, detached: bool = False,
               **options: Any) -> RemoteWorker:
        """Start an instance on the server and return its RemoteWorker.

        ``program_or_target``: a Program (or its id) from ``upload`` (then ``target`` is
        ``file.py:Name`` inside it, or comes from its corral.toml), or a
        ``package.module:Name`` importable on the server. ``workers > 1`` starts a Pool
        there. ``requirements`` get an environment built by the plugin machinery.
        ``detached`` instances outlive this session. ``options``: ``timeout``,
        ``cancel_grace``, ``max_calls``, ``max_rss``, ``restart``, ``check_config``,
        ``max_queue``, ``prefetch``. Raises LaunchError, SetupError (as locally),
        LimitExceeded."""
        program = None
        if isinstance(program_or_target, Program):
            program = program_or_target.id
        elif isinstance(program_or_target, str) and len(program_or_target) == 64 \
                and ":" not in program_or_target:
            program = program_or_target
        elif isinstance(program_or_target, str):
            target = target or program_or_target
        else:
            raise TypeError("launch() takes a Program, a program id or a target reference, "
                            f"not {type(program_or_target).__name__}")
        msg = dict(program=program, target=target, config=dict(config or {}), slots=slots,
                   workers=workers, requirements=requirements, detached=detached,
                   options=options)
        info = self._ask(lambda seq: p.Launch(seq=seq, **msg), p.InstanceInfo)
        worker = RemoteWorker(self, info)
        if "timeout" in options:
            worker.default_timeout = options["timeout"]
        self._workers.append(worker)
        return worker

    def runner(self, program: Program | str | None = None,
               **launch: Any) -> Callable[..., RemoteWorker]:
        """A ``runner`` for ``corral.Pool``: each of the pool's workers is an instance
        launched here (``launch(program, target=<the pool's target>, **launch)``, plus the
        pool's own worker options), so the pool spreads calls over remote instances,
        retries idempotent calls on another and stops them with itself::

            prog = session.upload("model.py")
            with corral.Pool("model.py:Model", workers=3, runner=session.runner(prog)) as pool:
                results = list(pool.map("predict", xs))

        Without ``program`` the target must be importable on the server."""
        def make(target: str, **options: Any) -> RemoteWorker:
            if program is None:
                return self.launch(target, **{**launch, **options})
            return self.launch(program, target=target, **{**launch, **options})
        return make

    def instances(self) -> list[p.InstanceInfo]:
        """This client identity's instances on the server (attached or detached)."""
        return self._ask(lambda seq: p.ListInstances(seq), list[p.InstanceInfo])

    def attach(self, instance_id: str) -> RemoteWorker:
        """A RemoteWorker for an instance of this identity (e.g. a detached one from an
        earlier session). InstanceNotFound when no instance of yours has that id."""
        info = self._ask(lambda seq: p.Attach(seq, instance_id), p.InstanceInfo)
        worker = RemoteWorker(self, info)
        self._workers.append(worker)
        return worker

    def detach(self) -> None:
        """End the session, leaving every instance of it running (detached): a later
        session with the same ``identity`` can ``attach`` to them."""
        self._ask(lambda seq: p.Detach(seq, None))
        self._link.close()

    def capabilities(self) -> dict[str, Any]:
        """What the server's machine offers: ``cpu_cores``, ``memory_total`` and
        ``memory_available`` (bytes), ``gpus`` (index, name, memory), ``python_versions``,
        ``environments``, ``tags`` and ``load`` right now."""
        return self._ask(lambda seq: p.Capabilities(seq))

    def ping(self) -> None:
        self._ask(lambda seq: p.Ping(seq))

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """End the session: instances launched attached stop on the server (this waits
        for them), detached ones live on. Idempotent."""
        link = self._link
        if link.closed:
            return
        if link._error is None:
            try:
                self._ask(lambda seq: p.Bye(seq), timeout=60.0)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        link.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(url: str, *, token: str | None = None, identity: str | None = None,
            open_timeout: float = 10.0) -> Session:
    """Open a session with the ``corral host`` at ``url`` (``ws://host:port``).

    ``token`` defaults to $CORRAL_TOKEN. ``identity`` is this client's secret key (a new
    random one by default; pass an earlier session's ``identity`` to attach to its
    detached instances). Raises AuthenticationError for a wrong token and HandshakeError
    when the server refuses the session (versions, Host/Origin, capacity) or is
    unreachable."""
    return Session(url, token=token, identity=identity, open_timeout=open_timeout)


class AsyncSession:
    """The asyncio twin of Session: the same methods, awaitable. Workers it launches are
    RemoteWorkers (use their ``acall``/``asubmit``/``astream``/``awatch``)."""

    def __init__(self, session: Session):
        self.sync = session
        self.identity = session.identity
        self.url = session.url

    async def upload(self, path: str | os.PathLike, **kwargs: Any) -> Program:
        return await asyncio.to_thread(self.sync.upload, path, **kwargs)

    async def launch(self, program_or_target: Program | str, **kwargs: Any) -> RemoteWorker:
        return await asyncio.to_thread(self.sync.launch, program_or_target, **kwargs)

    async def instances(self) -> list[p.InstanceInfo]:
        return await asyncio.to_thread(self.sync.instances)

    async def attach(self, instance_id: str) -> RemoteWorker:
        return await asyncio.to_thread(self.sync.attach, instance_id)

    async def detach(self) -> None:
        await asyncio.to_thread(self.sync.detach)

    async def capabilities(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.capabilities)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


async def aconnect(url: str, *, token: str | None = None, identity: str | None = None,
                   open_timeout: float = 10.0) -> AsyncSession:
    """The asyncio twin of ``connect``."""
    session = await asyncio.to_thread(Session, url, token=token, identity=identity,
                                      open_timeout=open_timeout)
    return AsyncSession(session)


__all__ = ["connect", "aconnect", "Session", "AsyncSession", "Program", "RemoteWorker",
           "InstanceNotFound"]
