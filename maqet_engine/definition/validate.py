"""From a raw definition mapping to a :class:`Spec`: strict checks, normalization."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.definition.check import (
    PathContext,
    check_data,
    check_keys,
    check_section,
    expand_user,
    show,
)
from maqet_engine.definition.hostpaths import check_host_file
from maqet_engine.definition.model import Spec
from maqet_engine.definition.network import normalize_network
from maqet_engine.definition.schema import SSH, TOP
from maqet_engine.definition.storage import (
    StorageRegistry,
    check_device_slots,
    default_registry,
    normalize_storage,
)
from maqet_engine.errors import ConfigError
from maqet_engine.paths import Paths


def validate_vm_name(name: object) -> str:
    """Return ``name`` if it is a valid VM name, else raise :class:`ConfigError`.

    VM names become directory names and QEMU's ``-name``, so only
    ``constants.VM_NAME_RE`` passes: no ``/``, ``..``, spaces, NUL or commas.
    """
    if not isinstance(name, str) or not C.VM_NAME_RE.fullmatch(name):
        raise ConfigError(f"{show(name)} is not a valid VM name", path="name",
                          hint=f"use {C.VM_NAME_HELP}")
    return name


def normalize_cloud_init(raw: Mapping[str, Any], *, vm_name: str) -> dict[str, Any]:
    """The ``cloud_init`` section in canonical form (:func:`maqet_engine.cloudinit.normalize`),
    with ``hostname`` defaulting to the VM's name when that is a valid host name and no
    other part of the section names the host (user-data ``hostname``/``fqdn``, meta-data
    ``local-hostname``)."""
    from maqet_engine.cloudinit.config import normalize  # yaml & co: only when used

    cfg = normalize(raw, path="cloud_init")
    user_data = cfg["user_data"]
    named = (isinstance(user_data, Mapping) and ("hostname" in user_data or "fqdn" in user_data)
             or "local-hostname" in cfg["meta_data"])
    if cfg["hostname"] is None and not named and C.HOSTNAME_RE.fullmatch(vm_name):
        cfg["hostname"] = vm_name
    return cfg


def _check_seed_disk(storage: list[dict[str, Any]], seed: Path) -> None:
    """With ``cloud_init``, the seed disk takes a node-name and a file of the VM's
    directory: no storage entry may take either."""
    for index, entry in enumerate(storage):
        if entry["name"] == C.CLOUD_INIT_NODE_NAME:
            raise ConfigError(f"{show(entry['name'])} is reserved for the cloud-init seed "
                              "disk", path=f"storage[{index}].name",
                              hint="choose another name (or drop cloud_init and attach "
                              "your own seed)")
        if entry.get("file") and os.path.normpath(entry["file"]) == os.path.normpath(seed):
            raise ConfigError(f"{show(Path(entry['file']))} is the cloud-init seed maqet "
                              "writes", path=f"storage[{index}].file",
                              hint="give the disk another file name")


def parse_spec(raw: Mapping[str, Any], *, base_dir: Path, paths: Paths,
               registry: StorageRegistry | None = None) -> Spec:
    """Validate and normalize a definition (as returned by ``load_definition``).

    :param base_dir: what relative paths outside the VM's directory start from.
    :param paths: the installation's paths; disk files default into the VM's directory.
    :param registry: storage types (default: :func:`default_registry`).
    :raise ConfigError: the first problem found, with its dotted key path.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"the definition is {show(raw)}, not a mapping",
                          hint="write it as 'key: value' lines, starting with 'name:'")
    check_data(raw)  # a Python caller's mapping may hold anything
    check_keys(raw, TOP.keys(), "")  # before "name is required": 'nmae:' is a typo
    name = raw.get("name")
    if name is None:
        raise ConfigError("is required", path="name",
                          hint="set 'name:' in the definition or pass --name")
    validate_vm_name(name)
    ctx = PathContext(definition_dir=Path(os.path.abspath(base_dir)),
                      vm_dir=paths.vm_data(name).root, maqet_dirs=(paths.data, paths.runtime))
    data = check_section(raw, TOP.fields, "", ctx)
    for key in ("kernel", "initrd"):
        if data[key] is not None:
            check_host_file(data[key], key, write=False, device=False,
                            maqet_dirs=ctx.maqet_dirs, vm_dir=ctx.vm_dir)
    registry = registry or default_registry()
    data["storage"] = normalize_storage(data["storage"], path="storage", ctx=ctx,
                                        registry=registry)
    check_device_slots(data["storage"], machine=data["machine"], path="storage",
                       registry=registry)
    data["network"] = normalize_network(data["network"], path="network", vm_name=name)
    data["tags"] = sorted(set(data["tags"]))
    if data["cloud_init"] is None:
        del data["cloud_init"]  # stored only when set: older definitions keep their hash
    else:
        data["cloud_init"] = normalize_cloud_init(data["cloud_init"], vm_name=name)
        _check_seed_disk(data["storage"], paths.vm_data(name).cloud_init_seed)
    if data["ssh"] is None:
        del data["ssh"]  # stored only when set, like cloud_init
    else:
        data["ssh"] = check_section(data["ssh"], SSH.fields, "ssh", ctx)
    if not data["agent"]:
        del data["agent"]  # stored only when set: older definitions keep their hash
    if isinstance(data["binary"], str) and "/" in data["binary"]:
        data["binary"] = os.path.normpath(ctx.definition_dir
                                          / expand_user(data["binary"], "binary"))
    return Spec(data)
