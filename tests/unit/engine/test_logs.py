"""Reading a VM's logs: the tail."""

from __future__ import annotations

from maqet_engine.engine.logs import tail_bytes


def test_tail_bytes(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"a\nb\nc\n")
    assert tail_bytes(log, None) == (b"a\nb\nc\n", 6)
    assert tail_bytes(log, 2) == (b"b\nc\n", 6)
    assert tail_bytes(log, 0) == (b"", 6)
