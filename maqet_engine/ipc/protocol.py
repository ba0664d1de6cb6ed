"""Wire format of the runner's control socket.

One message per line, UTF-8 JSON, at most ``IPC_MAX_MESSAGE_BYTES`` including the
newline::

    request:  {"id": <int|str>, "method": "<name>", "params": {...}}
    reply:    {"id": <same id>, "result": <any JSON>}
          or  {"id": <same id|null>, "error": MaqetError.to_dict()}

Nothing here does I/O; both the asyncio server and the synchronous client use it.
"""

from __future__ import annotations

import json

from maqet_engine import constants as C
from maqet_engine.errors import MaqetError, UsageError, error_from_dict
from maqet_engine.frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ProtocolError(UsageError):
    """A message that is not a valid request or reply (answered, never fatal)."""


class Request(Frozen):
    __slots__ = ("id", "method", "params")
    id: int | str
    method: str
    params: dict[str, Any]


def encode(message: dict[str, Any]) -> bytes:
    """One message as a newline-terminated line; refuses oversized messages."""
    data = json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"
    if len(data) > C.IPC_MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the IPC limit of "
                            f"{C.IPC_MAX_MESSAGE_BYTES} bytes")
    return data


def encode_request(request_id: int | str, method: str, params: dict[str, Any]) -> bytes:
    return encode({"id": request_id, "method": method, "params": params})


def encode_result(request_id: int | str | None, result: Any) -> bytes:
    return encode({"id": request_id, "result": result})


def encode_error(request_id: int | str | None, error: MaqetError) -> bytes:
    return encode({"id": request_id, "error": error.to_dict()})


def _load(line: bytes) -> Any:
    if len(line) > C.IPC_MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message exceeds the IPC limit of {C.IPC_MAX_MESSAGE_BYTES} bytes")
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"malformed message: {err}") from err


def request_id_of(line: bytes) -> int | str | None:
    """Best effort: the id of a request that failed validation (for the error reply)."""
    try:
        data = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    ident = data.get("id") if isinstance(data, dict) else None
    return ident if isinstance(ident, int | str) and not isinstance(ident, bool) else None


def decode_request(line: bytes) -> Request:
    data = _load(line)
    if not isinstance(data, dict):
        raise ProtocolError("a request must be a JSON object")
    ident = data.get("id")
    if not isinstance(ident, int | str) or isinstance(ident, bool):
        raise ProtocolError("request 'id' must be an integer or a string")
    method = data.get("method")
    if not isinstance(method, str) or not method:
        raise ProtocolError("request 'method' must be a non-empty string")
    params = data.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError("request 'params' must be an object")
    unknown = set(data) - {"id", "method", "params"}
    if unknown:
        raise ProtocolError(f"unknown request fields: {', '.join(sorted(unknown))}")
    return Request(id=ident, method=method, params=params)


def decode_reply(line: bytes, expected_id: int | str) -> Any:
    """The result of a reply line, or raise the error it carries (rebuilt locally)."""
    data = _load(line)
    if not isinstance(data, dict) or ("result" in data) == ("error" in data):
        raise ProtocolError("a reply must be an object with exactly one of result/error")
    if "error" in data:
        error = data["error"]
        raise error_from_dict(error if isinstance(error, dict) else {"message": str(error)})
    if data.get("id") != expected_id:
        raise ProtocolError(f"reply for request {data.get('id')!r}, expected {expected_id!r}")
    return data["result"]
