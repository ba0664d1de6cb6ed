"""Wire format and key maps: pure code, no QEMU."""

from __future__ import annotations

import json

import pytest

from maqet_engine import constants as C
from maqet_engine.errors import QMPCommandError, StateConflict, UsageError
from maqet_engine.ipc import protocol
from maqet_engine.runner import keys


def test_request_round_trip():
    line = protocol.encode_request(3, "qmp", {"command": "query-status"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    request = protocol.decode_request(line)
    assert request == protocol.Request(id=3, method="qmp", params={"command": "query-status"})


def test_a_request_may_carry_the_callers_operation_id():
    line = protocol.encode_request(4, "stop", {"force": True}, op="a1b2c3d4e5f6")
    assert json.loads(line)["op"] == "a1b2c3d4e5f6"
    assert protocol.decode_request(line) == protocol.Request(
        id=4, method="stop", params={"force": True}, op="a1b2c3d4e5f6")
    assert b'"op"' not in protocol.encode_request(5, "ping", {})  # none: no field
    assert protocol.decode_request(b'{"id": 5, "method": "ping", "op": null}').op is None


@pytest.mark.parametrize("line", [
    b"garbage", b"[]", b"{}", b'{"id": true, "method": "ping"}', b'{"id": 1}',
    b'{"id": 1, "method": ""}', b'{"id": 1, "method": "ping", "params": []}',
    b'{"id": 1, "method": "ping", "extra": 1}', b"\xff\xfe",
    b'{"id": 1, "method": "ping", "op": 7}', b'{"id": 1, "method": "ping", "op": "a b"}',
    b'{"id": 1, "method": "ping", "op": "' + b"x" * 65 + b'"}',
])
def test_bad_requests_raise_protocol_errors(line):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_request(line)


@pytest.mark.parametrize(("line", "request_id"), [
    (b'{"id": 5, "method": 1}', 5), (b"nonsense", None), (b'{"id": false}', None)])
def test_request_id_is_recovered_for_error_replies(line, request_id):
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode_request(line)
    assert info.value.request_id == request_id


def test_oversized_messages_are_refused_both_ways():
    with pytest.raises(protocol.ProtocolError):
        protocol.encode_result(1, "x" * C.IPC_MAX_MESSAGE_BYTES)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_request(b" " * (C.IPC_MAX_MESSAGE_BYTES + 1))


def test_error_replies_rebuild_the_error():
    line = protocol.encode_error(2, QMPCommandError("device_del", "DeviceNotFound", "gone"))
    with pytest.raises(QMPCommandError) as info:
        protocol.decode_reply(line, 2)
    assert info.value.error_class == "DeviceNotFound" and info.value.exit_code == C.EXIT_RUNTIME
    with pytest.raises(StateConflict):
        protocol.decode_reply(protocol.encode_error(2, StateConflict("stopped")), 2)
    assert protocol.decode_reply(protocol.encode_result(2, {"a": 1}), 2) == {"a": 1}
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_reply(protocol.encode_result(9, None), 2)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_reply(json.dumps({"id": 2}).encode(), 2)


def test_chords_and_text():
    assert keys.chord("ctrl-alt-delete") == ["ctrl", "alt", "delete"]
    assert keys.chord("Ctrl-Alt-Del") == ["ctrl", "alt", "delete"]
    assert keys.chord("enter") == ["ret"]
    assert keys.chord("-") == ["minus"]
    assert keys.text_chords("aB1 !\n") == [["a"], ["shift", "b"], ["1"], ["spc"],
                                            ["shift", "1"], ["ret"]]
    assert keys.text_chords('$_{"') == [["shift", "4"], ["shift", "minus"],
                                        ["shift", "bracket_left"], ["shift", "apostrophe"]]
    for bad in ("ctrl-", "nosuchkey", "ctrl--x"):
        with pytest.raises(UsageError):
            keys.chord(bad)
    with pytest.raises(UsageError):
        keys.text_chords("\u00e9")


# --- hostile input: every way a line can be wrong is a ProtocolError (issue 9 item 5) ---
DEEP = b'{"id": 4, "method": "ping", "params": {"a": ' + b"[" * 60000 + b"}}"
HOSTILE = [
    DEEP,  # below the size limit, far beyond Python's recursion limit
    b'{"id": ' + b"1" * 5000 + b', "method": "ping"}',  # beyond int('1' * 5000)'s limit
    b'{"id": 1, "method": "x", "params": {"a": ' + b"9" * 5000 + b"}}",
    b'{"id": 1, "method": "x", "params": {"t": NaN}}',
    b'{"id": 1, "method": "x", "params": {"t": -Infinity}}',
    b'{"id": 1, "method": "x", "params": {"t": 1e400}}',  # overflows to inf
    b'{"id": "' + b"x" * (C.IPC_MAX_ID_CHARS + 1) + b'", "method": "ping"}',
    b'{"id": 9223372036854775808, "method": "ping"}',
    b"[" * 100000,  # over the request size limit
]


@pytest.mark.parametrize("line", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_requests_are_protocol_errors_with_a_short_message(line):
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode_request(line)
    assert len(str(info.value)) < 300


def test_nesting_is_capped_below_the_recursion_limit_and_the_id_kept():
    nested = b"[" * C.IPC_MAX_DEPTH + b"]" * C.IPC_MAX_DEPTH
    ok = b'{"id": 5, "method": "qmp", "params": {"a": ' + nested[2:-2] + b"}}"
    assert protocol.decode_request(ok).id == 5  # IPC_MAX_DEPTH levels, the envelope included
    deep = b'{"id": 5, "method": "qmp", "params": {"a": ' + nested + b"}}"
    with pytest.raises(protocol.ProtocolError, match="deeper than") as info:
        protocol.decode_request(deep)
    assert info.value.request_id == 5
    # Brackets inside strings are not nesting.
    text = b'{"id": 6, "method": "serial_wait", "params": {"pattern": "' + b"[" * 500 + b'"}}'
    assert protocol.decode_request(text).params["pattern"] == "[" * 500


def test_numbers_within_64_bits_pass():
    line = (b'{"id": -9223372036854775808, "method": "qmp", '
            b'"params": {"size": 18446744073709551615, "t": 1.5e300}}')
    request = protocol.decode_request(line)
    assert request.params == {"size": 2**64 - 1, "t": 1.5e300}


def test_requests_over_the_request_limit_are_refused_before_sending():
    with pytest.raises(protocol.ProtocolError, match="exceeds the IPC limit"):
        protocol.encode_request(1, "serial_write", {"text": "x" * C.IPC_MAX_REQUEST_BYTES})
    assert protocol.encode_request(1, "serial_write", {"text": "x" * 1000})
    with pytest.raises(protocol.ProtocolError):  # NaN is not JSON: never sent
        protocol.encode_request(1, "stop", {"timeout": float("nan")})


def test_error_replies_are_clipped_and_keep_their_type():
    long = UsageError("unknown method " + "m" * C.IPC_MAX_REQUEST_BYTES)
    line = protocol.encode_error(3, long)
    assert len(line) < C.IPC_ERROR_CHARS + 200
    with pytest.raises(UsageError, match="more characters"):
        protocol.decode_reply(line, 3)
    with pytest.raises(protocol.RunnerBusy) as info:
        protocol.decode_reply(protocol.encode_error(None, protocol.RunnerBusy("busy")), 3)
    assert info.value.exit_code == C.EXIT_RUNTIME
    with pytest.raises(protocol.ProtocolError) as bad:
        protocol.decode_reply(protocol.encode_error(None, protocol.ProtocolError("bad")), 3)
    assert bad.value.exit_code == C.EXIT_USAGE


def test_hostile_replies_are_protocol_errors():
    for line in (b'{"id": 1, "result": ' + b"[" * 60000 + b"}",
                 b'{"id": 1, "result": ' + b"7" * 5000 + b"}", b'{"id": 1, "result": NaN}',
                 b" " * (C.IPC_MAX_MESSAGE_BYTES + 1)):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode_reply(line, 1)
