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


@pytest.mark.parametrize("line", [
    b"garbage", b"[]", b"{}", b'{"id": true, "method": "ping"}', b'{"id": 1}',
    b'{"id": 1, "method": ""}', b'{"id": 1, "method": "ping", "params": []}',
    b'{"id": 1, "method": "ping", "extra": 1}', b"\xff\xfe",
])
def test_bad_requests_raise_protocol_errors(line):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_request(line)


def test_request_id_is_recovered_for_error_replies():
    assert protocol.request_id_of(b'{"id": 5, "method": 1}') == 5
    assert protocol.request_id_of(b"nonsense") is None
    assert protocol.request_id_of(b'{"id": false}') is None


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
