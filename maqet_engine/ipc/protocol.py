"""Wire format of the runner's control socket.

One message per line, UTF-8 JSON::

    request:  {"id": <int|str>, "method": "<name>", "params": {...}, "op": "<op id>"}
    reply:    {"id": <same id>, "result": <any JSON>}
          or  {"id": <same id|null>, "error": MaqetError.to_dict()}

A *stream* request (``agent_exec``, ``agent_file_write``, ``agent_file_read``,
``console``: methods that move data in both directions) keeps its connection between
the request and its reply for messages of one key each, in either direction::

    stream:   {"<kind>": <any JSON>}      e.g. {"data": "<base64>"}, {"end": true}

then the reply ends the request and the connection. Stream messages obey the same size
limits (a client's as a request, a runner's as a reply).

Limits (``constants.py``, docs/runner.md): a request line is at most
``IPC_MAX_REQUEST_BYTES`` and nests at most ``IPC_MAX_DEPTH`` arrays/objects; a reply
line is at most ``IPC_MAX_MESSAGE_BYTES``; an id is a 64-bit integer or a string of at
most ``IPC_MAX_ID_CHARS``; ``op`` (optional) is the operation id of the engine call that
sent the request (``OP_ID_RE``, :mod:`maqet_engine.ops`); ``NaN``/``Infinity`` (and
numbers that overflow to them) are not JSON and are refused. Every way a line can be
wrong is a :class:`ProtocolError` (never ``RecursionError``, never Python's integer
digit limit), which carries the id of the request when it could be read, for the error
reply.

Nothing here does I/O; both the asyncio server and the synchronous client use it.
"""

from __future__ import annotations

import json
import math

from maqet_engine import constants as C
from maqet_engine import ops
from maqet_engine.errors import MaqetError, RunnerUnavailable, UsageError, error_from_dict
from maqet_engine.frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ID_MAX = 2**63
_REQUEST_FIELDS = frozenset({"id", "method", "params", "op"})
_INT_DIGITS = len(str(2**64))


class ProtocolError(UsageError):
    """A message that is not a valid request or reply (answered, never fatal).
    ``request_id``: the id of the offending request when it could be read."""

    def __init__(self, message: str, *, hint: str | None = None,
                 request_id: int | str | None = None) -> None:
        self.request_id = request_id
        super().__init__(message, hint=hint)


class RunnerBusy(RunnerUnavailable):
    """The runner serves ``IPC_MAX_CLIENTS`` connections already and closed this one
    without reading from it: the request was not run, sending it again is safe."""


# Error types rebuilt as themselves here (errors.error_from_dict knows the others).
_LOCAL_TYPES: dict[str, type[MaqetError]] = {"ProtocolError": ProtocolError,
                                              "RunnerBusy": RunnerBusy}


class Request(Frozen):
    __slots__ = ("id", "method", "params", "op")
    id: int | str
    method: str
    params: dict[str, Any]
    op: str | None  # the operation id of the caller's engine call, if it sent one

    def __init__(self, *, id: int | str, method: str,
                 params: dict[str, Any], op: str | None = None) -> None:
        super().__init__(id=id, method=method, params=params, op=op)


def encode(message: dict[str, Any], *, limit: int = C.IPC_MAX_MESSAGE_BYTES) -> bytes:
    """One message as a newline-terminated line; refuses oversized or unencodable ones
    (too deep, NaN) with a ProtocolError."""
    try:
        text = json.dumps(message, separators=(",", ":"), default=str, allow_nan=False)
    except (ValueError, TypeError, RecursionError) as err:
        raise ProtocolError(f"message cannot be encoded as JSON: {_short(err)}") from err
    data = text.encode() + b"\n"
    if len(data) > limit:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the IPC limit of "
                            f"{limit} bytes")
    return data


def encode_request(request_id: int | str, method: str, params: dict[str, Any], *,
                   op: str | None = None) -> bytes:
    """A request line; ``op`` (the caller's operation id) is sent when given."""
    message: dict[str, Any] = {"id": request_id, "method": method, "params": params}
    if op is not None:
        message["op"] = op
    return encode(message, limit=C.IPC_MAX_REQUEST_BYTES)


def encode_result(request_id: int | str | None, result: Any) -> bytes:
    return encode({"id": request_id, "result": result})


def encode_error(request_id: int | str | None, error: MaqetError) -> bytes:
    """An error reply; its message is cut to ``IPC_ERROR_CHARS`` (it may quote input)."""
    data = {key: _clip(value) if isinstance(value, str) else value
            for key, value in error.to_dict().items()}
    return encode({"id": request_id, "error": data})


def _clip(text: str) -> str:
    if len(text) <= C.IPC_ERROR_CHARS:
        return text
    return text[:C.IPC_ERROR_CHARS] + f"... ({len(text) - C.IPC_ERROR_CHARS} more characters)"


def _short(err: BaseException) -> str:
    return _clip(str(err).splitlines()[0] if str(err) else type(err).__name__)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]!r} is out of range")
    return value


def _bounded_int(text: str) -> int:
    """JSON integers: 64-bit, signed or not (QMP sizes are uint64). Checked on the digits
    before converting, so Python's digit limit is never reached."""
    if len(text.lstrip("-")) > _INT_DIGITS or not -_ID_MAX <= (value := int(text)) < 2 * _ID_MAX:
        raise ValueError(f"integer {text[:40]!r}{'...' if len(text) > 40 else ''} "
                         "is out of the 64-bit range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load(line: bytes, limit: int) -> Any:
    if len(line) > limit:
        raise ProtocolError(f"message of {len(line)} bytes exceeds the IPC limit of "
                            f"{limit} bytes")
    try:
        return json.loads(line.decode("utf-8"), parse_float=_finite, parse_int=_bounded_int,
                          parse_constant=_no_constant)
    except RecursionError as err:
        raise ProtocolError(f"message nests deeper than {C.IPC_MAX_DEPTH} levels") from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, the number hooks
        raise ProtocolError(f"malformed message: {_short(err)}") from err


def _too_deep(data: Any, limit: int) -> bool:
    """Whether ``data`` nests more than ``limit`` arrays/objects (iterative walk)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _valid_id(ident: Any) -> bool:
    if isinstance(ident, bool):
        return False
    if isinstance(ident, int):
        return -_ID_MAX <= ident < _ID_MAX
    return isinstance(ident, str) and len(ident) <= C.IPC_MAX_ID_CHARS


def decode_request(line: bytes) -> Request:
    """The request on ``line``, or a ProtocolError (with ``request_id`` when known)."""
    data = _load(line, C.IPC_MAX_REQUEST_BYTES)
    if not isinstance(data, dict):
        raise ProtocolError("a request must be a JSON object")
    ident = data.get("id")
    known = ident if _valid_id(ident) else None
    if (line.count(b"[") + line.count(b"{") > C.IPC_MAX_DEPTH
            and _too_deep(data, C.IPC_MAX_DEPTH)):
        raise ProtocolError(f"message nests deeper than {C.IPC_MAX_DEPTH} levels",
                            request_id=known)
    if known is None:
        raise ProtocolError("request 'id' must be a 64-bit integer or a string of at most "
                            f"{C.IPC_MAX_ID_CHARS} characters")
    method = data.get("method")
    if not isinstance(method, str) or not method:
        raise ProtocolError("request 'method' must be a non-empty string", request_id=known)
    params = data.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError("request 'params' must be an object", request_id=known)
    unknown = set(data) - _REQUEST_FIELDS
    if unknown:
        raise ProtocolError(f"unknown request fields: {', '.join(sorted(unknown))}",
                            request_id=known)
    op = data.get("op")
    if op is not None and not ops.is_valid(op):
        raise ProtocolError(f"request 'op' must be an operation id ({C.OP_ID_HELP})",
                            request_id=known)
    return Request(id=known, method=method, params=params, op=op)


def decode_reply(line: bytes, expected_id: int | str) -> Any:
    """The result of a reply line, or raise the error it carries (rebuilt locally)."""
    return _reply_value(_load(line, C.IPC_MAX_MESSAGE_BYTES), expected_id)


def _reply_value(data: Any, expected_id: int | str) -> Any:
    """:func:`decode_reply` of a line already parsed."""
    if not isinstance(data, dict) or ("result" in data) == ("error" in data):
        raise ProtocolError("a reply must be an object with exactly one of result/error")
    if "error" in data:
        error = data["error"]
        if not isinstance(error, dict):
            error = {"message": str(error)}
        local = _LOCAL_TYPES.get(str(error.get("type")))
        if local is not None:
            raise local(str(error.get("message", "unknown error")))
        raise error_from_dict(error)
    if data.get("id") != expected_id:
        raise ProtocolError(f"reply for request {data.get('id')!r}, expected {expected_id!r}")
    return data["result"]


# --- streams ---------------------------------------------------------------------------
def encode_stream(kind: str, value: Any = True, *, limit: int = C.IPC_MAX_MESSAGE_BYTES,
                  ) -> bytes:
    """One message of a stream, ``{kind: value}``."""
    return encode({kind: value}, limit=limit)


def decode_stream(line: bytes, *, limit: int = C.IPC_MAX_REQUEST_BYTES) -> tuple[str, Any]:
    """A stream message from a client: ``(kind, value)``, or a ProtocolError."""
    data = _load(line, limit)
    if not isinstance(data, dict) or len(data) != 1:
        raise ProtocolError("a stream message must be an object with one key")
    if (line.count(b"[") + line.count(b"{") > C.IPC_MAX_DEPTH
            and _too_deep(data, C.IPC_MAX_DEPTH)):
        raise ProtocolError(f"message nests deeper than {C.IPC_MAX_DEPTH} levels")
    ((kind, value),) = data.items()
    return str(kind), value


def decode_stream_reply(line: bytes, expected_id: int | str) -> tuple[str, Any]:
    """What a runner sent on a stream: ``(kind, value)`` for a stream message, or
    ``("result", value)`` for the reply that ends it; an error reply is raised."""
    data = _load(line, C.IPC_MAX_MESSAGE_BYTES)
    if isinstance(data, dict) and "id" in data:
        return "result", _reply_value(data, expected_id)
    if not isinstance(data, dict) or len(data) != 1:
        raise ProtocolError("a stream message must be an object with one key")
    ((kind, value),) = data.items()
    return str(kind), value
