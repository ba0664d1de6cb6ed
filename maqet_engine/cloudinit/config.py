"""The ``cloud_init`` section of a definition: strict checks and its canonical form.

:func:`normalize` is a pure function (no I/O) from what the user wrote to a sorted,
JSON-able mapping with every default filled in; the engine hashes and compares that
form, and :func:`maqet_engine.cloudinit.seed.build_seed` renders it. Normalizing is
idempotent: ``normalize(normalize(x)) == normalize(x)``.

Canonical form (every key always present)::

    hostname:            str | None        RFC 1123 host name; None: the image's own
    users:               list of           [] : cloud-init's default user only
      name:              str               POSIX account name ('default' is reserved)
      ssh_authorized_keys: list[str]       canonical OpenSSH public key lines; []
      sudo:              str | None        sudoers rule; `true` becomes
                                           "ALL=(ALL) NOPASSWD:ALL", `false` None
    ssh_authorized_keys: list[str]         keys of the image's default user; []
    user_data:           dict | str        #cloud-config mapping ({}), or raw text as is
    meta_data:           dict              extra meta-data keys; {}
    network_config:      dict | str | None network config v1/v2 mapping or raw YAML text;
                                           None: no network-config file (cloud-init's
                                           fallback: DHCP on the first NIC)

Rules where shortcuts and explicit data meet (documented in the package docstring):
a key may come from a shortcut or from ``user_data``/``meta_data``, never from both;
raw-text ``user_data`` cannot take the shortcuts that would have to be merged into it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from maqet_engine import constants as C
from maqet_engine.cloudinit.sshkeys import parse_public_key
from maqet_engine.definition.check import (
    check_keys,
    join,
    require_list,
    require_mapping,
    show,
)
from maqet_engine.errors import ConfigError

__all__ = ["KEYS", "USER_KEYS", "normalize"]

KEYS = ("hostname", "meta_data", "network_config", "ssh_authorized_keys", "user_data", "users")
USER_KEYS = ("name", "ssh_authorized_keys", "sudo")

_NETWORK_VERSIONS = (1, 2)


def normalize(raw: Mapping[str, Any], *, path: str = "cloud_init") -> dict[str, Any]:
    """Check a ``cloud_init`` mapping and return its canonical form (see module doc).

    :param path: the section's key path, the prefix of every error path.
    :raise ConfigError: the first problem found, with the dotted path of the culprit.
    """
    raw = require_mapping(raw, path, "the cloud_init section")
    check_keys(raw, KEYS, path)
    out: dict[str, Any] = {
        "hostname": _hostname(raw.get("hostname"), join(path, "hostname")),
        "meta_data": _meta_data(raw.get("meta_data"), join(path, "meta_data")),
        "network_config": _network_config(raw.get("network_config"),
                                          join(path, "network_config")),
        "ssh_authorized_keys": _keys(raw.get("ssh_authorized_keys"),
                                     join(path, "ssh_authorized_keys")),
        "user_data": _user_data(raw.get("user_data"), join(path, "user_data")),
        "users": _users(raw.get("users"), path),
    }
    _check_overlaps(out, path)
    return out


# --- shortcuts -----------------------------------------------------------------

def _hostname(value: object, path: str) -> str | None:
    if value is None:
        return None
    text = _string(value, path)
    if not C.HOSTNAME_RE.fullmatch(text):
        raise ConfigError(f"{show(text)} is not a valid host name", path=path,
                          hint=f"use {C.HOSTNAME_HELP}")
    return text


def _users(value: object, section: str) -> list[dict[str, Any]]:
    path = join(section, "users")
    if value is None:
        return []
    items = require_list(value, path,
                         "[{name: admin, ssh_authorized_keys: ['ssh-ed25519 AAAA...']}]")
    users: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        item_path = join(path, index)
        entry = require_mapping(item, item_path, "each user")
        check_keys(entry, USER_KEYS, item_path)
        name_path = join(item_path, "name")
        if entry.get("name") is None:
            raise ConfigError("is required", path=name_path,
                              hint="give the account name, such as 'admin' or 'root'")
        name = _string(entry["name"], name_path)
        if name == C.CLOUD_INIT_DEFAULT_USER:
            raise ConfigError("'default' is cloud-init's name for the image's own user",
                              path=name_path, hint="list that user's keys under "
                              f"{join(section, 'ssh_authorized_keys')} instead")
        if not C.USER_NAME_RE.fullmatch(name):
            raise ConfigError(f"{show(name)} is not a valid user name", path=name_path,
                              hint=f"use {C.USER_NAME_HELP}")
        if name in seen:
            raise ConfigError(f"{show(name)} is already listed at {join(path, seen[name])}",
                              path=name_path, hint="merge the two entries into one")
        seen[name] = index
        users.append({
            "name": name,
            "ssh_authorized_keys": _keys(entry.get("ssh_authorized_keys"),
                                         join(item_path, "ssh_authorized_keys")),
            "sudo": _sudo(entry.get("sudo"), join(item_path, "sudo"), name),
        })
    return users


def _sudo(value: object, path: str, user: str) -> str | None:
    if value is None or value is False:
        return None
    if user == "root":
        raise ConfigError("root needs no sudo rule", path=path, hint="remove 'sudo' from root")
    if value is True:
        return C.CLOUD_INIT_SUDO_ALL
    if isinstance(value, str) and value.strip() and "\n" not in value:
        return value.strip()
    raise ConfigError(f"{show(value)} is not true, false or a sudoers rule", path=path,
                      hint=f"use true (for {C.CLOUD_INIT_SUDO_ALL!r}), false, or one rule "
                      "as a string")


def _keys(value: object, path: str) -> list[str]:
    if value is None:
        return []
    items = require_list(value, path, "['ssh-ed25519 AAAA... me@laptop']")
    keys: list[str] = []
    for index, item in enumerate(items):
        item_path = join(path, index)
        text = _string(item, item_path)
        try:
            keys.append(parse_public_key(text).line)
        except ValueError as err:
            raise ConfigError(str(err), path=item_path,
                              hint="paste one line of a .pub file, such as "
                              "~/.ssh/id_ed25519.pub") from None
    return keys


# --- explicit data -------------------------------------------------------------

def _user_data(value: object, path: str) -> dict[str, Any] | str:
    if value is None:
        return {}
    if isinstance(value, str):
        return _user_data_text(value, path)
    if isinstance(value, Mapping):
        return _plain_mapping(value, path)
    raise ConfigError(f"{show(value)} is neither a mapping nor text", path=path,
                      hint="write #cloud-config keys as a mapping, or a script/MIME "
                      "document as a '|' block")


def _user_data_text(text: str, path: str) -> str:
    start = text.lstrip().lower()
    if not start:
        raise ConfigError("is empty", path=path, hint="remove it, or give a mapping or a script")
    if not start.startswith(C.CLOUD_INIT_USER_DATA_STARTS):
        first = text.lstrip().splitlines()[0]
        raise ConfigError(f"cloud-init ignores text starting {show(first)}", path=path,
                          hint="start it with '#cloud-config', '#!' (a script), "
                          "'Content-Type:' (MIME) or write user_data as a mapping")
    if start.startswith("#cloud-config") and not start.startswith("#cloud-config-"):
        data = _parse_yaml(text, path)
        if not isinstance(data, Mapping | None):
            raise ConfigError("the #cloud-config text is not a mapping", path=path,
                              hint="write it as 'key: value' lines")
    return text


def _meta_data(value: object, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    data = _plain_mapping(require_mapping(value, path, "meta_data"), path)
    if "instance-id" in data:
        raise ConfigError("is set by maqet", path=join(path, "instance-id"),
                          hint="remove it: maqet derives it from the seed's content, so that "
                          "any change makes cloud-init run again")
    return data


def _network_config(value: object, path: str) -> dict[str, Any] | str | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError("is empty", path=path, hint="remove it to let cloud-init use DHCP")
        data = _parse_yaml(value, path)
        _network_version(data, path)
        return value
    data = _plain_mapping(require_mapping(value, path, "network config version 2"), path)
    _network_version(data, path)
    return data


def _network_version(data: object, path: str) -> None:
    """Network config v1 or v2, either bare or under a top-level ``network`` key."""
    if isinstance(data, Mapping) and isinstance(data.get("network"), Mapping):
        data, path = data["network"], join(path, "network")
    if not isinstance(data, Mapping):
        raise ConfigError("is not a mapping", path=path,
                          hint="write network config version 2 such as "
                          "'{version: 2, ethernets: {...}}'")
    version = data.get("version")
    if version not in _NETWORK_VERSIONS or isinstance(version, bool):
        raise ConfigError("needs 'version: 1' or 'version: 2'", path=join(path, "version"),
                          hint="cloud-init reads network config versions 1 and 2 "
                          "(2 is netplan's format)")


def _check_overlaps(out: Mapping[str, Any], path: str) -> None:
    """Shortcuts and explicit keys may not both set one cloud-init key."""
    users, keys, hostname = out["users"], out["ssh_authorized_keys"], out["hostname"]
    user_data = out["user_data"]
    if isinstance(user_data, str):
        for shortcut, used in (("users", users), ("ssh_authorized_keys", keys)):
            if used:
                raise ConfigError(f"is raw text, so maqet cannot add {shortcut!r} to it",
                                  path=join(path, "user_data"),
                                  hint=f"write user_data as a mapping, or move {shortcut!r} "
                                  "into the text yourself")
        return
    generated = {
        "hostname": ("hostname", hostname is not None),
        "users": ("users", bool(users)),
        "ssh_authorized_keys": ("ssh_authorized_keys", bool(keys)),
        "disable_root": ("users (the root entry)", any(u["name"] == "root" for u in users)),
    }
    for key, (shortcut, active) in generated.items():
        if active and key in user_data:
            raise ConfigError(f"is also set by {join(path, shortcut)}",
                              path=join(join(path, "user_data"), key),
                              hint="keep one of the two")
    if hostname is not None and "local-hostname" in out["meta_data"]:
        raise ConfigError(f"is also set by {join(path, 'hostname')}",
                          path=join(join(path, "meta_data"), "local-hostname"),
                          hint="keep one of the two")


# --- generic checks ------------------------------------------------------------

def _plain_mapping(value: Mapping[Any, Any], path: str) -> dict[str, Any]:
    """A deep copy with keys sorted, refusing what JSON and a stable hash cannot hold."""
    return {key: _plain(value[key], join(path, key))
            for key in sorted(_string_keys(value, path))}


def _plain(value: object, path: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{show(value)} is not a finite number", path=path,
                              hint="quote it to make it a string")
        return value
    if isinstance(value, Mapping):
        return _plain_mapping(value, path)
    if isinstance(value, list | tuple):
        return [_plain(item, join(path, index)) for index, item in enumerate(value)]
    raise ConfigError(f"{show(value)} ({type(value).__name__}) is not a string, number, "
                      "boolean, list or mapping", path=path,
                      hint="quote it to make it a string (YAML reads dates and !!binary "
                      "as other types)")


def _string_keys(value: Mapping[Any, Any], path: str) -> list[str]:
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"key {show(key)} is not a string", path=path,
                              hint="quote the key")
        if not key:
            raise ConfigError("has an empty key", path=path, hint="remove it or name it")
    return list(value)


def _parse_yaml(text: str, path: str) -> Any:
    import yaml  # only raw text needs it; keep the import off the definition-loading path

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"is not valid YAML{where}: {problem}", path=path,
                          hint="fix the text, or write it as a mapping") from None


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{show(value)} is not a string", path=path,
                          hint="quote the value to make it a string")
    if not value.strip():
        raise ConfigError("is empty", path=path, hint="give a value or remove the key")
    return value.strip()
