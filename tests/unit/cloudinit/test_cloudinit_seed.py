"""build_seed(): the three files, the merge of shortcuts and user_data, the instance-id."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from maqet_engine.cloudinit import Seed, build_seed, normalize
from maqet_engine.errors import ConfigError

ID = re.compile(r"maqet-web1-[0-9a-f]{16}")


def _cloud_config(seed: Seed) -> dict[str, Any]:
    head, _, body = seed.user_data.decode().partition("\n")
    assert head == "#cloud-config"
    return yaml.safe_load(body)


def _meta(seed: Seed) -> dict[str, Any]:
    return yaml.safe_load(seed.meta_data.decode())


def test_empty_config_gives_a_minimal_valid_seed():
    seed = build_seed({}, vm_name="web1")
    assert seed.user_data == b"#cloud-config\n{}\n"
    assert _meta(seed) == {"instance-id": seed.instance_id}
    assert ID.fullmatch(seed.instance_id)
    assert seed.network_config is None
    assert [name for name, _ in seed.files()] == ["user-data", "meta-data"]


def test_hostname_goes_to_meta_data_and_user_data():
    seed = build_seed({"hostname": "web1.example.org"}, vm_name="web1")
    assert _meta(seed)["local-hostname"] == "web1.example.org"
    assert _cloud_config(seed) == {"hostname": "web1.example.org"}


def test_users_shortcut_renders_cloud_init_users(ed25519: str):
    seed = build_seed({"users": [{"name": "admin", "ssh_authorized_keys": [ed25519],
                                  "sudo": True}, {"name": "ops"}]}, vm_name="web1")
    assert _cloud_config(seed) == {"users": [
        {"name": "admin", "ssh_authorized_keys": [ed25519], "sudo": "ALL=(ALL) NOPASSWD:ALL"},
        {"name": "ops"},
    ]}


def test_root_user_enables_root_login_the_way_cloud_init_accepts(ed25519: str):
    doc = _cloud_config(build_seed(
        {"users": [{"name": "root", "ssh_authorized_keys": [ed25519]}]}, vm_name="web1"))
    assert doc == {"disable_root": False,
                   "users": [{"name": "root", "ssh_authorized_keys": [ed25519]}]}


def test_default_user_keys_alone_and_next_to_users(ed25519: str, rsa: str):
    alone = _cloud_config(build_seed({"ssh_authorized_keys": [rsa]}, vm_name="web1"))
    assert alone == {"ssh_authorized_keys": [rsa]}
    both = _cloud_config(build_seed({"ssh_authorized_keys": [rsa],
                                     "users": [{"name": "admin",
                                                "ssh_authorized_keys": [ed25519]}]},
                                    vm_name="web1"))
    # a users list would drop the image's default user, whose keys these are: keep it
    assert both["users"][0] == "default"
    assert both["ssh_authorized_keys"] == [rsa]


def test_user_data_mapping_is_merged_with_the_shortcuts(ed25519: str):
    doc = _cloud_config(build_seed({
        "hostname": "web1",
        "users": [{"name": "admin", "ssh_authorized_keys": [ed25519]}],
        "user_data": {"packages": ["htop"], "runcmd": [["touch", "/run/done"]],
                      "ssh_pwauth": False},
    }, vm_name="web1"))
    assert doc["packages"] == ["htop"]
    assert doc["runcmd"] == [["touch", "/run/done"]]
    assert doc["ssh_pwauth"] is False
    assert doc["hostname"] == "web1"
    assert doc["users"][0]["name"] == "admin"


def test_user_data_yaml_is_sorted_block_style_and_never_folded(ed25519: str):
    long_key = ed25519 + " " + "x" * 300  # a comment far past any line width
    seed = build_seed({"ssh_authorized_keys": [long_key], "user_data": {"b": 1, "a": [1, 2]}},
                      vm_name="web1")
    assert seed.user_data.decode() == (
        "#cloud-config\na:\n- 1\n- 2\nb: 1\nssh_authorized_keys:\n- " + long_key + "\n")


def test_unicode_is_written_as_utf8_not_escaped():
    seed = build_seed({"user_data": {"final_message": "fertig – ok ✓"}}, vm_name="web1")
    assert "fertig – ok ✓".encode() in seed.user_data


def test_raw_user_data_and_network_config_are_used_verbatim():
    script = "#!/bin/sh\n# no trailing newline is added\necho hi"
    network = "network:\n  version: 2\n  ethernets:\n    eth0: {dhcp4: true}\n"
    seed = build_seed({"user_data": script, "network_config": network, "hostname": "web1"},
                      vm_name="web1")
    assert seed.user_data == script.encode()
    assert seed.network_config == network.encode()
    assert _meta(seed)["local-hostname"] == "web1"  # hostname needs only meta-data


def test_network_config_mapping_is_dumped_and_listed_last():
    seed = build_seed({"network_config": {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}}},
                      vm_name="web1")
    assert seed.network_config == b"ethernets:\n  eth0:\n    dhcp4: true\nversion: 2\n"
    assert [name for name, _ in seed.files()] == ["user-data", "meta-data", "network-config"]


def test_extra_meta_data_is_kept_next_to_the_id():
    seed = build_seed({"meta_data": {"dsmode": "local", "public-keys": {"k": "v"}}},
                      vm_name="web1")
    assert _meta(seed) == {"dsmode": "local", "instance-id": seed.instance_id,
                           "public-keys": {"k": "v"}}


FULL: dict[str, Any] = {
    "hostname": "web1",
    "users": [{"name": "admin", "ssh_authorized_keys": [], "sudo": True}],
    "user_data": {"packages": ["htop"], "write_files": [{"path": "/etc/x", "content": "1"}]},
    "meta_data": {"dsmode": "net"},
    "network_config": {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}},
}


def test_same_config_gives_the_same_files_and_id():
    first = build_seed(copy.deepcopy(FULL), vm_name="web1")
    second = build_seed(copy.deepcopy(FULL), vm_name="web1")
    assert first == second
    assert first.instance_id == second.instance_id
    assert first.files() == second.files()


def test_key_order_and_the_normalized_form_do_not_change_the_seed():
    reordered = {key: FULL[key] for key in reversed(list(FULL))}
    reordered["user_data"] = dict(reversed(list(FULL["user_data"].items())))
    seed = build_seed(FULL, vm_name="web1")
    assert build_seed(reordered, vm_name="web1") == seed
    assert build_seed(normalize(FULL), vm_name="web1") == seed


@pytest.mark.parametrize("change", [
    lambda c: c.update(hostname="web2"),
    lambda c: c["users"][0].update(sudo=False),
    lambda c: c["users"].append({"name": "ops"}),
    lambda c: c["user_data"]["packages"].append("vim"),
    lambda c: c["user_data"]["write_files"][0].update(content="2"),
    lambda c: c["meta_data"].update(dsmode="local"),
    lambda c: c["network_config"]["ethernets"]["eth0"].update(dhcp4=False),
    lambda c: c.pop("network_config"),
    lambda c: c.update(users=[], user_data="#cloud-config\npackages: [htop]\n"),
])
def test_any_change_gives_a_new_instance_id(change: Any):
    config = copy.deepcopy(FULL)
    change(config)
    before = build_seed(FULL, vm_name="web1")
    after = build_seed(config, vm_name="web1")
    assert after.instance_id != before.instance_id
    assert ID.fullmatch(after.instance_id)


def test_the_instance_id_names_the_vm():
    assert build_seed({}, vm_name="db.2").instance_id.startswith("maqet-db.2-")
    assert (build_seed({}, vm_name="a").instance_id[-16:]
            == build_seed({}, vm_name="b").instance_id[-16:])  # same content, same digits


def test_invalid_config_and_vm_name_are_refused():
    with pytest.raises(ConfigError):
        build_seed({"hostnme": "x"}, vm_name="web1")
    with pytest.raises(ValueError, match="not a valid VM name"):
        build_seed({}, vm_name="../x")


def test_seed_is_immutable():
    seed = build_seed({}, vm_name="web1")
    with pytest.raises(AttributeError):
        seed.user_data = b""  # type: ignore[misc]
