"""build_argv: the exact QEMU command line, feature by feature."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from maqet_engine import constants as C
from maqet_engine.definition import Spec, build_argv
from maqet_engine.definition.argv import memory_arg
from maqet_engine.paths import Paths

Parse = Callable[..., Spec]
MiB = 1024 * 1024


@pytest.fixture
def argv_of(parse: Parse, paths: Paths) -> Callable[..., list[str]]:
    def _argv(raw: dict[str, Any], accel: str = "tcg") -> list[str]:
        spec = parse({"name": "vm", **raw})
        return build_argv(spec, runtime=paths.vm_runtime(7), data=paths.vm_data("vm"),
                          accel=accel)
    return _argv


def head(accel: str = "tcg") -> list[str]:
    return ["qemu-system-x86_64", "-name", "vm,process=maqet-vm", "-nodefaults",
            "-no-user-config", "-accel", accel]


def middle(paths: Paths, display: str = "none", vga: str = "std") -> list[str]:
    rt, data = paths.vm_runtime(7), paths.vm_data("vm")
    return [
        "-chardev", f"socket,id={C.QMP_CHARDEV_ID},fd={C.QMP_FD_PLACEHOLDER},server=on,wait=off",
        "-mon", f"chardev={C.QMP_CHARDEV_ID},mode=control",
        "-chardev", f"socket,id=serial0,path={rt.serial_socket},server=on,wait=off,"
        f"logfile={data.serial_log},logappend=on",
        "-serial", "chardev:serial0",
        "-display", display, "-vga", vga,
    ]


def test_minimal(argv_of: Callable[..., list[str]], paths: Paths):
    assert argv_of({}) == head() + middle(paths)
    assert argv_of({}, accel="kvm") == head("kvm") + middle(paths)


def blockdev(driver: str, name: str, filename: str, readonly: bool = False) -> str:
    node: dict[str, Any] = {"driver": driver, "node-name": name}
    file: dict[str, Any] = {"driver": "file", "filename": filename}
    if readonly:
        node["read-only"] = file["read-only"] = True
    node["file"] = file
    return json.dumps(node, separators=(",", ":"))


# (id, definition keys, argv between -accel and -qmp, argv after -vga)
CASES: list[tuple[str, dict[str, Any], list[str], list[str]]] = [
    ("machine", {"machine": "q35,smm=off"}, ["-machine", "q35,smm=off"], []),
    ("memory-mib", {"memory": "1G"}, ["-m", "1024M"], []),
    ("memory-bare", {"memory": 256}, ["-m", "256M"], []),
    ("memory-unaligned", {"memory": "3000001B"}, ["-m", "3000001b"], []),
    ("cpu", {"cpu": 4}, ["-smp", "4"], []),
    ("cpu-model", {"cpu_model": "host"}, ["-cpu", "host"], []),
    ("sizing-order", {"cpu_model": "max", "cpu": 2, "memory": 64, "machine": "pc"},
     ["-machine", "pc", "-m", "64M", "-smp", "2", "-cpu", "max"], []),
    ("kernel", {"kernel": "vmlinuz"}, [], ["-kernel", "{defdir}/vmlinuz"]),
    ("kernel-initrd-append",
     {"kernel": "vmlinuz", "initrd": "initrd.gz", "append": "console=ttyS0 root=/dev/vda"}, [],
     ["-kernel", "{defdir}/vmlinuz", "-initrd", "{defdir}/initrd.gz",
      "-append", "console=ttyS0 root=/dev/vda"]),
    ("qcow2-virtio", {"storage": [{"name": "root", "type": "qcow2", "size": "1G"}]}, [],
     ["-blockdev", blockdev("qcow2", "root", "{vmdir}/root.qcow2"),
      "-device", "virtio-blk-pci,drive=root,id=root"]),
    ("raw-ide", {"storage": [{"name": "d", "type": "raw", "size": 1, "interface": "ide"}]}, [],
     ["-blockdev", blockdev("raw", "d", "{vmdir}/d.raw"),
      "-device", "ide-hd,bus=ide.0,unit=0,drive=d,id=d"]),
    ("readonly", {"storage": [{"name": "d", "type": "qcow2", "file": "{defdir}/base.qcow2",
                               "readonly": True}]}, [],
     ["-blockdev", blockdev("qcow2", "d", "{defdir}/base.qcow2", readonly=True),
      "-device", "virtio-blk-pci,drive=d,id=d"]),
    ("scsi-one-controller",
     {"storage": [{"name": "a", "type": "qcow2", "size": 1, "interface": "scsi"},
                  {"name": "b", "type": "raw", "size": 1},
                  {"name": "c", "type": "raw", "size": 1, "interface": "scsi"}]}, [],
     ["-device", "virtio-scsi-pci,id=scsi0",
      "-blockdev", blockdev("qcow2", "a", "{vmdir}/a.qcow2"),
      "-device", "scsi-hd,bus=scsi0.0,drive=a,id=a",
      "-blockdev", blockdev("raw", "b", "{vmdir}/b.raw"),
      "-device", "virtio-blk-pci,drive=b,id=b",
      "-blockdev", blockdev("raw", "c", "{vmdir}/c.raw"),
      "-device", "scsi-hd,bus=scsi0.0,drive=c,id=c"]),
    ("overlay", {"storage": [{"name": "d", "type": "qcow2", "backing": "base.qcow2"}]}, [],
     ["-blockdev", blockdev("qcow2", "d", "{vmdir}/d.qcow2"),
      "-device", "virtio-blk-pci,drive=d,id=d"]),
    ("comma-in-disk-path",
     {"storage": [{"name": "d", "type": "raw", "file": "a,b.img", "size": 1}]}, [],
     ["-blockdev", blockdev("raw", "d", "{vmdir}/a,b.img"), "-device",
      "virtio-blk-pci,drive=d,id=d"]),
    ("cdrom", {"storage": [{"name": "cd", "type": "cdrom", "file": "debian.iso"}]}, [],
     ["-blockdev", blockdev("raw", "cd", "{defdir}/debian.iso", readonly=True),
      "-device", "ide-cd,bus=ide.0,unit=0,drive=cd,id=cd"]),
    ("ide-on-pc",
     {"storage": [{"name": f"d{i}", "type": "raw", "size": 1, "interface": "ide"}
                  for i in range(3)] + [{"name": "cd", "type": "cdrom", "file": "debian.iso"}]},
     [],
     ["-blockdev", blockdev("raw", "d0", "{vmdir}/d0.raw"),
      "-device", "ide-hd,bus=ide.0,unit=0,drive=d0,id=d0",
      "-blockdev", blockdev("raw", "d1", "{vmdir}/d1.raw"),
      "-device", "ide-hd,bus=ide.0,unit=1,drive=d1,id=d1",
      "-blockdev", blockdev("raw", "d2", "{vmdir}/d2.raw"),
      "-device", "ide-hd,bus=ide.1,unit=0,drive=d2,id=d2",
      "-blockdev", blockdev("raw", "cd", "{defdir}/debian.iso", readonly=True),
      "-device", "ide-cd,bus=ide.1,unit=1,drive=cd,id=cd"]),
    ("ide-on-q35",
     {"machine": "pc-q35-7.2,smm=off",
      "storage": [{"name": "d", "type": "raw", "size": 1, "interface": "ide"},
                  {"name": "cd", "type": "cdrom", "file": "debian.iso"}]},
     ["-machine", "pc-q35-7.2,smm=off"],
     ["-blockdev", blockdev("raw", "d", "{vmdir}/d.raw"),
      "-device", "ide-hd,bus=ide.0,drive=d,id=d",
      "-blockdev", blockdev("raw", "cd", "{defdir}/debian.iso", readonly=True),
      "-device", "ide-cd,bus=ide.1,drive=cd,id=cd"]),
    ("ide-on-unknown-machine",
     {"machine": "isapc", "storage": [{"name": "cd", "type": "cdrom", "file": "debian.iso"}]},
     ["-machine", "isapc"],
     ["-blockdev", blockdev("raw", "cd", "{defdir}/debian.iso", readonly=True),
      "-device", "ide-cd,drive=cd,id=cd"]),
    ("virtfs", {"storage": [{"name": "src", "type": "virtfs", "path": "share"}]}, [],
     ["-fsdev", "local,id=src,path={defdir}/share,security_model=mapped-xattr",
      "-device", "virtio-9p-pci,fsdev=src,mount_tag=src"]),
    ("virtfs-readonly-comma",
     {"storage": [{"name": "s", "type": "virtfs", "path": "odd,dir", "mount_tag": "host",
                   "security_model": "none", "readonly": True}]}, [],
     ["-fsdev", "local,id=s,path={defdir}/odd,,dir,security_model=none,readonly=on",
      "-device", "virtio-9p-pci,fsdev=s,mount_tag=host"]),
    ("network-order",
     {"network": [{"type": "user", "forward": [{"host": 2222, "guest": 22}]},
                  {"type": "tap", "ifname": "tap0", "mac": "52:54:00:00:00:02"}]}, [],
     ["-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22",
      "-device", "virtio-net-pci,netdev=net0",
      "-netdev", "tap,id=net1,ifname=tap0,script=no,downscript=no",
      "-device", "virtio-net-pci,netdev=net1,mac=52:54:00:00:00:02"]),
    ("agent-after-network-before-arguments",
     {"agent": True, "network": [{"type": "user"}], "arguments": ["-rtc", "base=utc"]}, [],
     ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0",
      "-chardev", f"socket,id=maqet-qga,fd={C.AGENT_FD_PLACEHOLDER},server=on,wait=off",
      "-device", "virtio-serial-pci,id=maqet.vser0",
      "-device", "virtserialport,bus=maqet.vser0.0,chardev=maqet-qga,"
      "name=org.qemu.guest_agent.0,id=maqet.qga0",
      "-rtc", "base=utc"]),
    ("agent-false", {"agent": False}, [], []),
    ("arguments-last",
     {"arguments": ["-rtc", "base=utc"], "network": [{"type": "user"}],
      "storage": [{"name": "cd", "type": "cdrom", "file": "debian.iso"}],
      "kernel": "vmlinuz"}, [],
     ["-kernel", "{defdir}/vmlinuz",
      "-blockdev", blockdev("raw", "cd", "{defdir}/debian.iso", readonly=True),
      "-device", "ide-cd,bus=ide.0,unit=0,drive=cd,id=cd",
      "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0",
      "-rtc", "base=utc"]),
]


def _fill(value: Any, defdir: Path, vmdir: Path) -> Any:
    text = json.dumps(value).replace("{defdir}", str(defdir)).replace("{vmdir}", str(vmdir))
    return json.loads(text)


@pytest.mark.parametrize(("case", "raw", "pre", "post"), CASES, ids=[c[0] for c in CASES])
def test_feature_argv(argv_of: Callable[..., list[str]], paths: Paths, defdir: Path,
                      case: str, raw: dict[str, Any], pre: list[str], post: list[str]):
    (defdir / "odd,dir").mkdir()
    vmdir = paths.vm_data("vm").root
    expected = head() + _fill(pre, defdir, vmdir) + middle(paths) + _fill(post, defdir, vmdir)
    assert argv_of(_fill(raw, defdir, vmdir)) == expected


def test_display_and_vga(argv_of: Callable[..., list[str]], paths: Paths):
    assert argv_of({"display": "vnc=:1", "vga": "none"}) == head() + middle(
        paths, display="vnc=:1", vga="none")


def test_binary_is_argv0(argv_of: Callable[..., list[str]]):
    assert argv_of({"binary": "/opt/qemu/bin/qemu-system-x86_64"})[0] == (
        "/opt/qemu/bin/qemu-system-x86_64")


def test_commas_in_runtime_paths_are_doubled(parse: Parse, tmp_path: Path):
    from maqet_engine.paths import resolve_paths

    odd = resolve_paths({"MAQET_HOME": str(tmp_path / "a,b")})
    argv = build_argv(parse({"name": "vm"}), runtime=odd.vm_runtime(1), data=odd.vm_data("vm"),
                      accel="tcg")
    serial = next(a for a in argv if a.startswith("socket,id=serial0,"))
    assert f"path={str(odd.runtime).replace(',', ',,')}/1/serial.sock," in serial
    assert f"logfile={str(odd.data).replace(',', ',,')}/vms/vm/serial.log" in serial


def test_the_qmp_monitor_is_the_given_fd(parse: Parse, paths: Paths):
    """The command line is built once, around the spawner's socket: no rewriting later."""
    argv = build_argv(parse({"name": "vm"}), runtime=paths.vm_runtime(1),
                      data=paths.vm_data("vm"), accel="tcg", qmp_fd=9)
    index = argv.index(f"socket,id={C.QMP_CHARDEV_ID},fd=9,server=on,wait=off")
    assert argv[index - 1] == "-chardev"
    assert argv[index + 1:index + 3] == ["-mon", f"chardev={C.QMP_CHARDEV_ID},mode=control"]
    assert "-qmp" not in argv


def test_the_agent_port_is_the_given_fd(parse: Parse, paths: Paths):
    """The guest agent's socket is pre-bound by the spawner as QMP's is: QEMU (maybe
    dropped to maqet-qemu) never creates it, and the runner's connect cannot race it."""
    argv = build_argv(parse({"name": "vm", "agent": True}), runtime=paths.vm_runtime(1),
                      data=paths.vm_data("vm"), accel="tcg", qmp_fd=9, agent_fd=10)
    assert f"socket,id={C.AGENT_CHARDEV_ID},fd=10,server=on,wait=off" in argv
    assert not any("qga.sock" in a for a in argv)


def test_agent_is_stored_only_when_set(parse: Parse):
    """Definitions stored before `agent` existed keep their hash (no drift, no restart)."""
    plain = parse({"name": "vm"})
    assert "agent" not in plain.data
    assert parse({"name": "vm", "agent": False}).hash == plain.hash
    assert parse({"name": "vm", "agent": True}).data["agent"] is True


def test_build_argv_is_pure(parse: Parse, paths: Paths):
    spec = parse({"name": "vm", "storage": [{"name": "d", "type": "qcow2", "size": 1}]})
    before = spec.to_json()
    runs = [build_argv(spec, runtime=paths.vm_runtime(1), data=paths.vm_data("vm"), accel="tcg")
            for _ in range(2)]
    assert runs[0] == runs[1] and spec.to_json() == before
    assert not paths.data.exists() and not paths.runtime.exists()


def test_from_json_spec_builds_the_same_argv(parse: Parse, paths: Paths):
    spec = parse({"name": "vm", "memory": "1G", "network": [{"type": "user"}]})
    kwargs: dict[str, Any] = {"runtime": paths.vm_runtime(1), "data": paths.vm_data("vm"),
                              "accel": "tcg"}
    assert build_argv(Spec.from_json(spec.to_json()), **kwargs) == build_argv(spec, **kwargs)


@pytest.mark.parametrize(("n_bytes", "text"), [(512 * MiB, "512M"), (2 * MiB, "2M"),
                                               (2 * MiB + 1, "2097153b"), (1536 * MiB, "1536M")])
def test_memory_arg(n_bytes: int, text: str):
    assert memory_arg(n_bytes) == text


def test_confinement_is_spelled_from_what_the_engine_decided(parse: Parse, paths: Paths):
    """-sandbox and -runas come right after the accelerator. set*id calls stay allowed
    only with -runas (QEMU 7.2 drops privileges after installing the filter); spawning
    only for a bridge NIC (QEMU runs qemu-bridge-helper)."""
    def argv(raw: dict[str, Any], **kwargs: Any) -> list[str]:
        return build_argv(parse({"name": "vm", **raw}), runtime=paths.vm_runtime(7),
                          data=paths.vm_data("vm"), accel="tcg", **kwargs)

    base = "on,obsolete=deny,resourcecontrol=deny"
    assert argv({}, sandbox=True)[len(head()):][:2] == [
        "-sandbox", f"{base},spawn=deny,elevateprivileges=deny"]
    assert argv({}, sandbox=True, run_as="maqet-qemu")[len(head()):][:4] == [
        "-sandbox", f"{base},spawn=deny,elevateprivileges=allow", "-runas", "maqet-qemu"]
    bridged = argv({"network": [{"type": "bridge", "bridge": "br0"}]}, sandbox=True)
    assert bridged[bridged.index("-sandbox") + 1] == f"{base},spawn=allow,elevateprivileges=deny"
    assert "-sandbox" not in argv({}) and "-runas" not in argv({})
