"""From a ``cloud_init`` mapping to the NoCloud seed's files and image (no I/O).

``user-data`` is ``#cloud-config`` YAML (or the user's raw text, verbatim), ``meta-data``
carries ``instance-id`` and ``local-hostname``, ``network-config`` is optional. YAML is
written by PyYAML's pure-Python ``SafeDumper`` with sorted keys and no line folding (the
C dumper is not used: its output could differ between hosts with and without libyaml).

The instance-id is ``maqet-<vm name>-<16 hex digits>``, the digits taken from a sha256
over the three files (meta-data without the id itself): any change to the config gives a
new id, so cloud-init treats the VM as a new instance and runs again; the same config
always gives the same id, so an unchanged VM is left alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from maqet_engine import constants as C
from maqet_engine.cloudinit.config import normalize
from maqet_engine.cloudinit.image import build_image
from maqet_engine.frozen import Frozen

__all__ = ["Seed", "build_seed"]

_YAML_WIDTH = 1 << 20  # never fold long lines (SSH keys) across lines


class Seed(Frozen):
    """The contents of one NoCloud seed (immutable; built with keywords)."""

    __slots__ = ("instance_id", "user_data", "meta_data", "network_config")
    instance_id: str
    user_data: bytes
    meta_data: bytes
    network_config: bytes | None  # None: no network-config file

    def files(self) -> list[tuple[str, bytes]]:
        """``(name, content)`` of each file the seed holds, in a fixed order."""
        files = [(C.CLOUD_INIT_USER_DATA, self.user_data), (C.CLOUD_INIT_META_DATA, self.meta_data)]
        if self.network_config is not None:
            files.append((C.CLOUD_INIT_NETWORK_CONFIG, self.network_config))
        return files

    def image(self) -> bytes:
        """The seed as an ISO 9660 image labelled ``cidata``, built by pycdlib.

        The bytes carry the build time, so two calls differ; the files in it do not.
        """
        return build_image(self.files(), label=C.CLOUD_INIT_LABEL)


def build_seed(config: Mapping[str, Any], *, vm_name: str) -> Seed:
    """Render a ``cloud_init`` mapping (raw or already normalized) as a :class:`Seed`.

    :param vm_name: the VM's name, part of the instance-id.
    :raise ConfigError: the mapping is invalid (see :func:`normalize`).
    :raise ValueError: ``vm_name`` is not a valid VM name (a caller's bug).
    """
    if not C.VM_NAME_RE.fullmatch(vm_name):
        raise ValueError(f"{vm_name!r} is not a valid VM name")
    cfg = normalize(config)
    user_data = (cfg["user_data"].encode("utf-8") if isinstance(cfg["user_data"], str)
                 else b"#cloud-config\n" + _yaml(_cloud_config(cfg)))
    network = cfg["network_config"]
    network_config = (None if network is None
                      else network.encode("utf-8") if isinstance(network, str)
                      else _yaml(network))
    meta: dict[str, Any] = dict(cfg["meta_data"])
    if cfg["hostname"] is not None:
        meta["local-hostname"] = cfg["hostname"]
    digest = _content_digest(user_data, _yaml(meta), network_config)
    instance_id = f"{C.CLOUD_INIT_INSTANCE_ID_PREFIX}{vm_name}-" \
                  f"{digest[:C.CLOUD_INIT_INSTANCE_ID_HEX]}"
    meta["instance-id"] = instance_id
    return Seed(instance_id=instance_id, user_data=user_data, meta_data=_yaml(meta),
                network_config=network_config)


def _cloud_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The #cloud-config mapping: the shortcuts, then ``user_data`` (they never overlap)."""
    doc: dict[str, Any] = {}
    if cfg["hostname"] is not None:
        doc["hostname"] = cfg["hostname"]
    if cfg["ssh_authorized_keys"]:
        doc["ssh_authorized_keys"] = list(cfg["ssh_authorized_keys"])
    if cfg["users"]:
        # A `users` list replaces the image's default user unless it names "default";
        # keep that user when keys were given for it.
        users: list[Any] = [C.CLOUD_INIT_DEFAULT_USER] if cfg["ssh_authorized_keys"] else []
        for user in cfg["users"]:
            entry: dict[str, Any] = {"name": user["name"]}
            if user["ssh_authorized_keys"]:
                entry["ssh_authorized_keys"] = list(user["ssh_authorized_keys"])
            if user["sudo"] is not None:
                entry["sudo"] = user["sudo"]
            users.append(entry)
        doc["users"] = users
        if any(user["name"] == "root" for user in cfg["users"]):
            doc["disable_root"] = False  # else cloud-init refuses root logins with a message
    doc.update(cfg["user_data"])
    return doc


def _content_digest(user_data: bytes, meta_data: bytes, network_config: bytes | None) -> str:
    """sha256 over the files, each framed by its name and length (no ambiguous joins)."""
    digest = hashlib.sha256()
    for name, content in ((C.CLOUD_INIT_USER_DATA, user_data),
                          (C.CLOUD_INIT_META_DATA, meta_data),
                          (C.CLOUD_INIT_NETWORK_CONFIG, network_config)):
        if content is not None:
            digest.update(f"{name}\0{len(content)}\0".encode("ascii"))
            digest.update(content)
    return digest.hexdigest()


def _yaml(data: Mapping[str, Any]) -> bytes:
    import yaml  # deferred: loading a definition without cloud_init never pays for it

    text = yaml.dump(dict(data), Dumper=yaml.SafeDumper, sort_keys=True,
                     default_flow_style=False, allow_unicode=True, width=_YAML_WIDTH)
    return text.encode("utf-8")
