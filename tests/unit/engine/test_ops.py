"""Operation ids: one per engine context, bound while a facade call runs, returned in
the Result, refused when malformed. No QEMU."""

from __future__ import annotations

import threading

import pytest

from maqet_engine import engine, ops
from maqet_engine.errors import UsageError


def test_each_context_gets_a_fresh_short_id_and_keeps_it(maqet_home):
    first, second = engine.EngineContext.from_env(), engine.EngineContext.from_env()
    assert first.op_id != second.op_id
    assert len(first.op_id) == 12 and int(first.op_id, 16) >= 0
    assert first.with_check_mode(True).op_id == first.op_id
    assert first.with_op_id("deploy-42").op_id == "deploy-42"
    assert first.with_op_id(None).op_id not in (first.op_id, "deploy-42")


@pytest.mark.parametrize("bad", ["", "-x", "a b", "x" * 65, "é", "a/b", 7])
def test_a_malformed_op_id_is_a_usage_error(maqet_home, bad):
    with pytest.raises(UsageError, match="operation id"):
        engine.EngineContext.from_env(op_id=bad)


def test_a_facade_call_runs_under_its_op_id_and_returns_it(maqet_home):
    """The events a call records carry its op id; so does its Result; nothing stays
    bound after the call."""
    ctx = engine.EngineContext.from_env(op_id="run-1")
    spec = engine.load_definition(ctx, definition={"name": "vm1", "memory": "64M"})
    result = engine.define(ctx, spec)
    assert result.op_id == "run-1" and result.to_dict()["op_id"] == "run-1"
    assert ops.current_op() is None
    later = ctx.with_op_id("run-2")
    engine.remove(later, "vm1")
    from maqet_engine.store import Store

    with Store.open(ctx.paths.db) as store:
        trail = [(e.kind, e.op_id) for e in store.find_events(vm="vm1")]
        assert trail == [("defined", "run-1"), ("removed", "run-2")]
        assert [e.kind for e in store.find_events(op_id="run-2")] == ["removed"]


def test_the_binding_is_per_thread_and_nests(maqet_home):
    outer = engine.EngineContext.from_env(op_id="outer")
    inner = outer.with_op_id("inner")
    from maqet_engine.engine.context import operation

    seen = {}

    @operation
    def probe(ctx, key):
        seen[key] = ops.current_op()
        other = threading.Thread(target=lambda: seen.setdefault("thread", ops.current_op()))
        other.start()
        other.join()
        if key == "outer":
            probe(inner, "inner")
            seen["after-inner"] = ops.current_op()

    probe(outer, "outer")
    assert seen == {"outer": "outer", "inner": "inner", "after-inner": "outer",
                    "thread": None}
