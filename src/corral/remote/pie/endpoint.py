"""One pie-client connection: identity and auth, then PIE's 12 requests.

Identity is ``x-pie-identity: tenant/user`` (or ``user``: tenant ``default``), replaced by
``auth_identify``'s username when the client sends one (pie-client's CLI always does). A
missing header answers HTTP 401 before the upgrade, as PIE does. With a token configured the
secret rides after a colon, ``tenant/user:TOKEN``, in either place (the only fields
pie-client and its CLI let a user set; a URL query would land in access logs); it is
compared in constant time and never logged or echoed. Until it is given, every request but
authentication answers ``ok=false``.

Every request with a ``corr_id`` gets exactly one ``response``, including an undecodable or
oversize frame that had one. ``signal_process`` and ``transfer_file`` have no ``corr_id``:
their failures reach the client as a ``stderr`` event of that process, where PIE only logs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any

from ...exceptions import CorralError
from ...server.auth import token_matches
from . import frames as f
from .manifest import InvalidManifest, parse
from .processes import PieProcess
from .service import MAX_UPLOADS_IN_FLIGHT
from .store import Assembly, UploadError, check_source

log = logging.getLogger("corral.pie")

MAX_AUTH_FAILURES = 5
NOT_FOUND = "Process not found"


def split_identity(raw: str) -> tuple[str, str | None]:
    """``("tenant/user", secret)`` from ``tenant/user:secret``, ``user`` or ``user:secret``;
    the user part may not be empty."""
    ident, sep, secret = raw.partition(":")
    tenant, slash, user = ident.strip().rpartition("/")
    user = user.strip()
    if not user:
        raise ValueError("the identity has no user")
    return f"{(tenant.strip() or 'default') if slash else 'default'}/{user}", \
        (secret if sep else None)


class Session:
    def __init__(self, service: Any, websocket: Any, identity: str | None):
        self.service = service
        self.ws = websocket
        self.identity = identity  # None: not authenticated yet (token mode)
        self.uploads: dict[int, tuple[Assembly, f.AddProgram, Any]] = {}
        self.failed_uploads: set[int] = set()
        self.transfers: dict[tuple[str, str], Assembly] = {}
        self.launched: list[PieProcess] = []
        self.tasks: set[asyncio.Task] = set()
        self.auth_failures = 0
        self._file_ids = itertools.count(1)
        self._send_lock = asyncio.Lock()
        self.open = True

    # -- out --------------------------------------------------------------------------------

    async def send(self, data: bytes) -> bool:
        if not self.open:
            return False
        try:
            async with self._send_lock:
                await self.ws.send_bytes(data)
            return True
        except Exception:  # noqa: BLE001 - the connection is gone
            self.open = False
            return False

    async def respond(self, corr_id: int, ok: bool, result: str) -> None:
        await self.send(f.encode(f.Response(corr_id, ok, result)))

    async def notice(self, process_id: str, text: str) -> None:
        """A failure of a request without corr_id, as a stderr event of its process."""
        await self.send(f.encode(f.ProcessEvent(process_id, "stderr", f"[corral] {text}\n")))

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                data = msg.get("bytes")
                if data is None:
                    data = msg.get("text")
                if data is None:
                    continue
                if len(data) > self.service.max_frame:
                    await self.refuse(data, f"frame of {len(data)} bytes exceeds the limit of "
                                            f"{self.service.max_frame} bytes")
                    continue
                try:
                    frame = f.decode(data)
                except f.BadFrame as exc:
                    await self.refuse(data, str(exc), exc.corr_id)
                    continue
                await self.dispatch(frame)
        finally:
            self.open = False
            await self.closed()

    async def refuse(self, data: Any, message: str, corr_id: int | None = None) -> None:
        if corr_id is None:
            corr_id = f.corr_id_of(data)
        if corr_id is not None:
            await self.respond(corr_id, False, message)
        elif self.open:
            try:
                await self.ws.send_text(json.dumps({"type": "error", "message": message}))
            except Exception:  # noqa: BLE001
                self.open = False

    async def closed(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for proc in self.launched:
            if proc.captured and not proc.finished.is_set():
                asyncio.ensure_future(proc.terminate())
        for proc in self.service.processes.all():
            proc.detach(self)

    async def dispatch(self, fr: Any) -> None:
        kind = type(fr)
        if kind is f.AuthIdentify:
            return await self.auth_identify(fr)
        if kind is f.AuthProve:
            return await self.respond(fr.corr_id, False, (
                "corral does not use auth_prove: send the token as 'user:TOKEN' in "
                "auth_identify or in the x-pie-identity header"))
        if self.identity is None:
            if hasattr(fr, "corr_id"):
                return await self.respond(fr.corr_id, False, (
                    "authentication required: identify as 'user:TOKEN' (auth_identify, "
                    "or the x-pie-identity header)"))
            return await self.notice(fr.process_id, "authentication required")
        if kind is f.Ping:
            return await self.respond(fr.corr_id, True, "Pong")
        if kind is f.SignalProcess:
            return await self.signal(fr)
        if kind is f.TransferFile:
            return await self.transfer(fr)
        if kind is f.LaunchProcess:
            return await self.launch(fr)
        if kind is f.AddProgram:
            return await self.add_program(fr)
        if kind is f.CheckProgram:
            have = self.service.store.get(fr.name, fr.version) is not None
            return await self.respond(fr.corr_id, True, "true" if have else "false")
        if kind is f.TerminateProcess:
            return await self.terminate(fr)
        if kind is f.AttachProcess:
            return await self.attach(fr)
        if kind is f.ListProcesses:
            procs = [p.summary() for p in self.service.processes.owned_by(self.identity)]
            return await self.respond(fr.corr_id, True, json.dumps(procs))
        if kind is f.Query:
            if fr.subject == "model_status":
                return await self.respond(fr.corr_id, False,
                                          "corral has no LLM engine: no model_status")
            return await self.respond(fr.corr_id, False,
                                      f"unknown query subject {fr.subject!r}")

    # -- requests ---------------------------------------------------------------------------

    async def auth_identify(self, fr: f.AuthIdentify) -> None:
        try:
            identity, secret = split_identity(fr.username)
        except ValueError as exc:
            return await self.respond(fr.corr_id, False, f"Username rejected: {exc}")
        token = self.service.token
        if token is not None and (secret is None or
                                  not token_matches(secret.encode(), token)):
            self.auth_failures += 1
            await self.respond(fr.corr_id, False, "missing or wrong token "
                                                  "(identify as 'user:TOKEN')")
            if self.auth_failures >= MAX_AUTH_FAILURES:
                await self.ws.close(code=1008)
            return
        self.identity = identity
        await self.respond(fr.corr_id, True, f"Authenticated as {identity}")

    async def add_program(self, fr: f.AddProgram) -> None:
        cid = fr.corr_id
        if cid in self.failed_uploads:
            return  # the rest of an upload already refused
        entry = self.uploads.get(cid)
        try:
            if entry is None:
                if len(self.uploads) >= MAX_UPLOADS_IN_FLIGHT:
                    raise UploadError(f"Too many uploads in flight (limit "
                                      f"{MAX_UPLOADS_IN_FLIGHT})")
                manifest = parse(fr.manifest)
                entry = (Assembly(fr.program_hash, fr.total_chunks, self.service.max_upload,
                                  "add_program"), fr, manifest)
                self.uploads[cid] = entry
            payload = entry[0].feed(fr.chunk_index, fr.total_chunks, fr.chunk_data)
        except (UploadError, InvalidManifest) as exc:
            self.uploads.pop(cid, None)
            self._failed(cid)
            text = f"Invalid manifest: {exc}" if isinstance(exc, InvalidManifest) else str(exc)
            return await self.respond(cid, False, text)
        if payload is None:
            return
        del self.uploads[cid]
        self.spawn(self._install(cid, entry[1], entry[2], payload, entry[0].declared))

    def _failed(self, cid: int) -> None:
        if len(self.failed_uploads) > 1024:
            self.failed_uploads.clear()
        self.failed_uploads.add(cid)

    async def _install(self, cid: int, first: f.AddProgram, manifest: Any, payload: bytes,
                       digest: str) -> None:
        service = self.service
        try:
            source = check_source(payload, manifest)
            # Build the environment now, so that a launch finds it ready.
            await asyncio.to_thread(service.pool_for, manifest.dependencies)
            text = service.store.add(manifest, first.manifest, source, digest, self.identity,
                                     first.force_overwrite)
        except InvalidManifest as exc:
            return await self.respond(cid, False, f"Invalid program: {exc}")
        except (CorralError, OSError) as exc:
            return await self.respond(cid, False, f"Cannot prepare {manifest.program}: {exc}")
        log.info("%s installed %s", self.identity, manifest.program)
        await self.respond(cid, True, text)

    async def launch(self, fr: f.LaunchProcess) -> None:
        service = self.service
        name, _, version = fr.inferlet.partition("@")
        prog = service.store.get(name, version) if version else service.store.latest(name)
        if prog is None:
            return await self.respond(fr.corr_id, False, f"Program not found: {fr.inferlet}")
        try:
            parsed = json.loads(fr.input) if fr.input else {}
        except ValueError as exc:
            return await self.respond(fr.corr_id, False, f"input is not JSON: {exc}")
        if prog.manifest.call == "kwargs" and not isinstance(parsed, dict):
            return await self.respond(fr.corr_id, False, (
                f"{prog.manifest.program} takes keyword arguments (call = \"kwargs\"): "
                f"the input must be a JSON object, not {type(parsed).__name__}"))
        try:
            pool = service.ready_pool(prog)
            if pool is None or pool.ready == 0:
                pool = await asyncio.to_thread(service.pool_for, prog.manifest.dependencies)
                worker = await asyncio.to_thread(pool.take)
            else:
                worker = pool.take()
        except (CorralError, OSError, RuntimeError) as exc:
            return await self.respond(fr.corr_id, False, f"Cannot start a process: {exc}")
        proc = PieProcess(worker, self.identity, prog.manifest.program, fr.input or "{}",
                          fr.capture_outputs, self)
        service.processes.add(proc)
        self.launched = [p for p in self.launched if not p.finished.is_set()]
        self.launched.append(proc)
        proc.start(prog.source, prog.manifest.entry, prog.manifest.call,
                   service.processes.remove)
        await self.respond(fr.corr_id, True, proc.id if fr.capture_outputs else "")

    async def terminate(self, fr: f.TerminateProcess) -> None:
        proc = self.service.processes.find(fr.process_id, self.identity)
        if proc is None:
            return await self.respond(fr.corr_id, False, NOT_FOUND)
        await proc.terminate()
        await self.respond(fr.corr_id, True, "Process terminated")

    async def attach(self, fr: f.AttachProcess) -> None:
        proc = self.service.processes.find(fr.process_id, self.identity)
        if proc is None:
            return await self.respond(fr.corr_id, False, NOT_FOUND)
        if not await proc.attach(self):
            return await self.respond(fr.corr_id, False, "Cannot attach: already attached")
        await self.respond(fr.corr_id, True, "Process attached")

    async def signal(self, fr: f.SignalProcess) -> None:
        proc = self.service.processes.find(fr.process_id, self.identity)
        if proc is None:
            return await self.notice(fr.process_id, f"signal_process: {NOT_FOUND}")
        try:
            await proc.deliver("signal", fr.message)
        except CorralError as exc:
            await self.notice(fr.process_id, f"signal_process failed: {exc}")

    async def transfer(self, fr: f.TransferFile) -> None:
        # Chunks go on to the program as they come (it assembles them), hashed on the way:
        # the server holds no payload, and the copy into the process overlaps the upload.
        proc = self.service.processes.find(fr.process_id, self.identity)
        key = (fr.process_id, fr.file_hash)
        if proc is None:
            self.transfers.pop(key, None)
            return await self.notice(fr.process_id, f"transfer_file: {NOT_FOUND}")
        entry = self.transfers.get(key)
        try:
            if entry is None:
                assembly = Assembly(fr.file_hash, fr.total_chunks, self.service.max_file,
                                    "transfer_file")
                entry = self.transfers[key] = (assembly, next(self._file_ids))
                fresh = True
            else:
                fresh = False
            done = entry[0].pass_on(fr.chunk_index, fr.total_chunks, fr.chunk_data)
        except UploadError as exc:
            self.transfers.pop(key, None)
            if entry is not None and not fresh:
                proc.send_in("file_abort", entry[1])
            return await self.notice(fr.process_id, str(exc))
        fid = entry[1]
        if fresh:
            proc.send_in("file_begin", (fid, fr.total_chunks))
        proc.send_in("file_chunk", (fid, fr.chunk_data))
        if done:
            del self.transfers[key]
            proc.send_in("file_end", fid)


async def serve_session(service: Any, websocket: Any) -> None:
    """The WebSocket endpoint: check the identity before the upgrade, then serve."""
    if service.guard is not None:
        refused = service.guard(websocket.scope)
        if refused is not None:
            return await _deny(websocket, refused[1], refused[0])
    raw = websocket.headers.get("x-pie-identity")
    try:
        if raw is None:
            raise ValueError("missing `x-pie-identity`")
        identity, secret = split_identity(raw)
    except ValueError as exc:
        return await _deny(websocket, f"identity: {exc}")
    if service.token is not None:
        if secret is not None and not token_matches(secret.encode(), service.token):
            return await _deny(websocket, "identity: wrong token")
        if secret is None:
            identity = None  # auth_identify must bring the token
    if not service.started:  # mounted lazily (PieService.mount): the first client starts it
        await asyncio.to_thread(service.start)
    await websocket.accept()
    session = Session(service, websocket, identity)
    await session.run()


async def _deny(websocket: Any, message: str, status: int = 401) -> None:
    from starlette.responses import PlainTextResponse

    try:
        await websocket.send_denial_response(PlainTextResponse(message, status_code=status))
    except RuntimeError:  # the server has no denial-response extension: a plain refusal
        await websocket.close(code=1008)
