"""PIE's frames as pie-client 0.5.3 sends and expects them: msgpack maps tagged by ``type``.

Client -> server: the 12 request types (``ClientFrame``). Server -> client: ``Response``,
``ProcessEvent`` and ``FileChunk`` (``"file"``). Field names and types follow
../shared/peers/pie/README.md (measured against pie-server 0.5.2). ``signal_process`` and
``transfer_file`` carry no ``corr_id``: PIE answers them with nothing.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

CHUNK_SIZE = 256 * 1024  # PIE's CHUNK_SIZE_BYTES, both ways

_TAG = dict(tag_field="type", kw_only=True, forbid_unknown_fields=False)


class AuthIdentify(msgspec.Struct, tag="auth_identify", **_TAG):
    corr_id: int
    username: str


class AuthProve(msgspec.Struct, tag="auth_prove", **_TAG):
    corr_id: int
    signature: str = ""


class CheckProgram(msgspec.Struct, tag="check_program", **_TAG):
    corr_id: int
    name: str
    version: str


class Query(msgspec.Struct, tag="query", **_TAG):
    corr_id: int
    subject: str
    record: str = ""


class AddProgram(msgspec.Struct, tag="add_program", **_TAG):
    corr_id: int
    program_hash: str
    manifest: str
    force_overwrite: bool = False
    chunk_index: int
    total_chunks: int
    chunk_data: bytes


class LaunchProcess(msgspec.Struct, tag="launch_process", **_TAG):
    corr_id: int
    inferlet: str
    input: str = "{}"
    capture_outputs: bool = True


class AttachProcess(msgspec.Struct, tag="attach_process", **_TAG):
    corr_id: int
    process_id: str


class TerminateProcess(msgspec.Struct, tag="terminate_process", **_TAG):
    corr_id: int
    process_id: str


class SignalProcess(msgspec.Struct, tag="signal_process", **_TAG):
    process_id: str
    message: str


class TransferFile(msgspec.Struct, tag="transfer_file", **_TAG):
    process_id: str
    file_hash: str
    chunk_index: int
    total_chunks: int
    chunk_data: bytes


class ListProcesses(msgspec.Struct, tag="list_processes", **_TAG):
    corr_id: int


class Ping(msgspec.Struct, tag="ping", **_TAG):
    corr_id: int


ClientFrame = Union[AuthIdentify, AuthProve, CheckProgram, Query, AddProgram, LaunchProcess,
                    AttachProcess, TerminateProcess, SignalProcess, TransferFile,
                    ListProcesses, Ping]

CLIENT_TYPES = ("auth_identify", "auth_prove", "check_program", "query", "add_program",
                "launch_process", "attach_process", "terminate_process", "signal_process",
                "transfer_file", "list_processes", "ping")


class Response(msgspec.Struct, tag="response", tag_field="type"):
    corr_id: int
    ok: bool
    result: str


class ProcessEvent(msgspec.Struct, tag="process_event", tag_field="type"):
    process_id: str
    event: str  # stdout stderr message return error
    value: str


class FileChunk(msgspec.Struct, tag="file", tag_field="type"):
    process_id: str
    file_hash: str
    chunk_index: int
    total_chunks: int
    chunk_data: bytes
    name: str | None = None


_decoder = msgspec.msgpack.Decoder(ClientFrame)
_json_decoder = msgspec.json.Decoder(ClientFrame)
_encoder = msgspec.msgpack.Encoder()


class BadFrame(ValueError):
    """A frame that is not one of the 12 requests; ``corr_id`` is its id when it had one."""

    def __init__(self, message: str, corr_id: int | None):
        super().__init__(message)
        self.corr_id = corr_id


def decode(data: bytes | str) -> Any:
    """One client frame (msgpack, or JSON text as PIE also accepts), else BadFrame."""
    try:
        if isinstance(data, str):
            return _json_decoder.decode(data)
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise BadFrame(_explain(data, exc), corr_id_of(data)) from None


def corr_id_of(data: bytes | str) -> int | None:
    """The ``corr_id`` of a frame we cannot otherwise use, when it has one."""
    try:
        raw = msgspec.json.decode(data) if isinstance(data, str) else msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return None
    if isinstance(raw, dict):
        cid = raw.get("corr_id")
        if isinstance(cid, int) and not isinstance(cid, bool):
            return cid
    return None


def _explain(data: bytes | str, exc: msgspec.DecodeError) -> str:
    try:
        raw = msgspec.json.decode(data) if isinstance(data, str) else msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return f"undecodable frame: {exc}"
    if not isinstance(raw, dict):
        return f"a frame must be a map with a 'type', not {type(raw).__name__}"
    kind = raw.get("type")
    if kind not in CLIENT_TYPES:
        return (f"unknown frame type {kind!r}; expected one of: " + ", ".join(CLIENT_TYPES))
    return f"invalid {kind} frame: {exc}"


def encode(frame: Any) -> bytes:
    return _encoder.encode(frame)
