"""Events: their operation ids, the queries `maqet events` makes, and retention (what is
pruned, when, and that counters derived from events never go down). Real SQLite."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from maqet_engine import constants as C
from maqet_engine import ops
from maqet_engine.errors import UsageError
from maqet_engine.store import Store
from maqet_engine.store.db import retention
from maqet_engine.store.migrations import MIGRATIONS


def test_events_carry_the_given_or_the_current_operation(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        store.insert_vm("a", "{}", "h")  # outside any operation
        store.add_event("a", "stop_rung", {"rung": "quit"}, op_id="given")
        token = ops.current.set("bound")
        try:
            store.update_runtime("a", status="running", event="started")
        finally:
            ops.current.reset(token)
        assert [(e.kind, e.op_id) for e in store.events("a")] == [
            ("defined", None), ("stop_rung", "given"), ("started", "bound")]
        assert store.events("a")[1].to_dict()["op_id"] == "given"


def test_find_events_filters_oldest_first(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        store.insert_vm("a", "{}", "h")
        store.insert_vm("b", "{}", "h")
        middle = time.time()
        for i in range(5):
            store.add_event("a" if i % 2 else "b", f"k{i}", op_id="x" if i < 3 else "y")
        everything = store.find_events()
        assert [e.id for e in everything] == sorted(e.id for e in everything)
        assert [e.kind for e in store.find_events(vm="a")] == ["defined", "k1", "k3"]
        assert [e.kind for e in store.find_events(op_id="x")] == ["k0", "k1", "k2"]
        assert [e.kind for e in store.find_events(since=middle)] == [f"k{i}" for i in range(5)]
        assert [e.kind for e in store.find_events(limit=2)] == ["k3", "k4"]
        after = store.find_events(op_id="x")[-1].id
        assert [e.kind for e in store.find_events(after_id=after)] == ["k3", "k4"]
        assert store.last_event_id() == everything[-1].id
    with Store.open(tmp_path / "none.db", create=False) as missing:
        assert missing.find_events() == [] and missing.last_event_id() == 0
        assert missing.event_counts(("crashed",)) == {}


def test_retention_keeps_the_newest_per_vm_and_counts_never_go_down(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        for vm in ("a", "b"):
            store.insert_vm(vm, "{}", "h")
        for i in range(30):
            store.add_event("a", "stop_rung", {"rung": "kill" if i % 3 else "quit"})
            store.add_event("a", "crashed", {})
        store.add_event("b", "crashed", {})
        kinds = ("crashed", "stop_rung")
        before = store.event_counts(kinds)
        assert before[("a", "stop_rung", "kill")] == 20
        assert before[("a", "stop_rung", "quit")] == 10
        assert before[("a", "crashed", "")] == 30 and before[("b", "crashed", "")] == 1

        deleted = store.prune_events(keep=10, max_age_days=0)
        assert deleted == 61 - 10  # a: 61 events (defined + 60), b keeps its 2
        kept = store.find_events(vm="a")
        assert len(kept) == 10 and kept[-1].kind == "crashed"
        assert len(store.find_events(vm="b")) == 2
        assert store.event_counts(kinds) == before  # folded into event_totals

        store.add_event("a", "crashed", {})
        assert store.event_counts(kinds)[("a", "crashed", "")] == 31


def test_retention_by_age(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        store.insert_vm("a", "{}", "h")
        store.add_event("gone-vm", "crashed", {})  # a removed VM's events go by age only
        old = store.last_event_id()
        assert store.prune_events(keep=0, max_age_days=1, now=time.time() + 86400 + 60) == old
        assert store.find_events() == []
        assert store.event_counts(("crashed",)) == {("gone-vm", "crashed", ""): 1}


def test_pruning_runs_by_itself_every_nth_event(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(C.ENV_EVENTS_KEEP, "5")
    with Store.open(tmp_path / "m.db") as store:
        store.insert_vm("a", "{}", "h")
        while store.last_event_id() < C.EVENTS_PRUNE_EVERY - 1:
            store.add_event("a", "tick")
        assert len(store.find_events(vm="a")) == C.EVENTS_PRUNE_EVERY - 1
        store.add_event("a", "tick")  # the PRUNE_EVERY-th event prunes, in its write
        assert len(store.find_events(vm="a")) == 5


@pytest.mark.parametrize(("keep", "days"), [("x", ""), ("-1", ""), ("", "nan"), ("1.5", ""),
                                            ("", "-2")])
def test_a_bad_retention_setting_says_what_to_fix(tmp_path, monkeypatch, keep, days):
    monkeypatch.setenv(C.ENV_EVENTS_KEEP, keep)
    monkeypatch.setenv(C.ENV_EVENTS_MAX_AGE_DAYS, days)
    with pytest.raises(UsageError, match="MAQET_EVENTS_KEEP"):
        retention()
    with Store.open(tmp_path / "m.db") as store, pytest.raises(UsageError):
        store.insert_vm("a", "{}", "h")  # every write, not 1 in EVENTS_PRUNE_EVERY


def test_retention_defaults_and_zero_turns_a_limit_off(monkeypatch):
    assert retention() == (C.EVENTS_KEEP, C.EVENTS_MAX_AGE_DAYS)
    monkeypatch.setenv(C.ENV_EVENTS_KEEP, "0")
    monkeypatch.setenv(C.ENV_EVENTS_MAX_AGE_DAYS, "0.5")
    assert retention() == (0, 0.5)


def test_a_v3_store_gains_op_ids_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    for step in MIGRATIONS[:3]:
        step(db)
    db.execute("PRAGMA user_version = 3")
    db.execute("INSERT INTO events (vm_name, at, kind, data) VALUES ('old', 1, 'started', '{}')")
    db.execute("COMMIT")
    db.close()
    with Store.open(path) as store:
        (event,) = store.find_events(vm="old")
        assert (event.kind, event.op_id) == ("started", None)
        store.add_event("old", "stopped", op_id="op-2")
        assert [e.op_id for e in store.find_events(op_id="op-2")] == ["op-2"]


def test_a_commit_with_events_touches_the_stamp_followers_wait_on(tmp_path: Path) -> None:
    with Store.open(tmp_path / "m.db") as store:
        stamp = store.events_stamp
        assert stamp == tmp_path / "maqet.events"
        store.insert_vm("a", "{}", "h")
        assert stamp.exists() and stamp.stat().st_mode & 0o777 == 0o600
        os.utime(stamp, ns=(0, 0))  # any touch now shows, whatever the clock's granularity
        store.update_runtime("a", status="running")  # no event: no touch
        assert stamp.stat().st_mtime_ns == 0
        store.add_event("a", "tick")
        assert stamp.stat().st_mtime_ns > 0
