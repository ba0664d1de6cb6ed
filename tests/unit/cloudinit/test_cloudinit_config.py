"""normalize(): the canonical form of `cloud_init`, and every refusal with its path."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from maqet_engine.cloudinit import normalize
from maqet_engine.errors import ConfigError

EMPTY = {
    "hostname": None,
    "meta_data": {},
    "network_config": None,
    "ssh_authorized_keys": [],
    "user_data": {},
    "users": [],
}


def test_an_empty_section_gets_every_default():
    assert normalize({}) == EMPTY


def test_shortcuts_are_canonicalized(ed25519: str, rsa: str):
    out = normalize({
        "hostname": " web1 ",
        "users": [{"name": "admin", "ssh_authorized_keys": [f"  {ed25519}  "], "sudo": True},
                  {"name": "ops", "sudo": "ALL=(ALL) ALL"},
                  {"name": "guest", "sudo": False}],
        "ssh_authorized_keys": [rsa.replace(" ", "   ", 1)],
    })
    assert out["hostname"] == "web1"
    assert out["users"] == [
        {"name": "admin", "ssh_authorized_keys": [ed25519], "sudo": "ALL=(ALL) NOPASSWD:ALL"},
        {"name": "ops", "ssh_authorized_keys": [], "sudo": "ALL=(ALL) ALL"},
        {"name": "guest", "ssh_authorized_keys": [], "sudo": None},
    ]
    assert out["ssh_authorized_keys"] == [rsa]  # single spaces between the parts


def test_sudo_true_and_its_rule_are_the_same_config():
    spelled = normalize({"users": [{"name": "a", "sudo": "ALL=(ALL) NOPASSWD:ALL"}]})
    assert normalize({"users": [{"name": "a", "sudo": True}]}) == spelled


def test_mappings_are_sorted_deep_copies_and_json_able():
    user_data = {"runcmd": [["echo", 1]], "packages": ["htop"], "apt": {"z": 1, "a": 2.5}}
    out = normalize({"user_data": user_data, "meta_data": {"public-keys": [], "dsmode": "net"},
                     "network_config": {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}}})
    assert list(out["user_data"]) == ["apt", "packages", "runcmd"]
    assert list(out["user_data"]["apt"]) == ["a", "z"]
    assert list(out["meta_data"]) == ["dsmode", "public-keys"]
    out["user_data"]["packages"].append("vim")
    assert user_data["packages"] == ["htop"]  # the input is not shared
    assert json.loads(json.dumps(out)) == out


def test_normalize_is_idempotent(ed25519: str):
    raw = {"hostname": "web1", "users": [{"name": "root", "ssh_authorized_keys": [ed25519]}],
           "user_data": {"packages": ["htop"]}, "network_config": "version: 2\n"}
    once = normalize(raw)
    assert normalize(once) == once


def test_raw_texts_are_kept_verbatim():
    script = "#!/bin/sh\necho hello > /tmp/x\n"
    network = "# comment kept\nnetwork:\n  version: 2\n  ethernets: {}\n"
    out = normalize({"user_data": script, "network_config": network, "hostname": "web1"})
    assert out["user_data"] == script
    assert out["network_config"] == network


@pytest.mark.parametrize("text", [
    "#cloud-config\npackages: [htop]\n",
    "#cloud-config\n",
    "  #Cloud-Config\nhostname: x\n",
    "#include\nhttps://example.invalid/ud\n",
    "Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n--XX--\n",
    "## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}\n",
    "#cloud-boothook\n#!/bin/sh\ntrue\n",
])
def test_user_data_texts_cloud_init_recognizes(text: str):
    assert normalize({"user_data": text})["user_data"] == text


# (section, error path, words in the message, words in the hint)
BAD: list[tuple[Any, str, str, str]] = [
    ("web1", "cloud_init", "'web1' is not a mapping", "'key: value' lines"),
    ({"hostnme": "x"}, "cloud_init.hostnme", "unknown key", "did you mean 'hostname'?"),
    ({"zzz": 1}, "cloud_init.zzz", "unknown key", "allowed keys: hostname, meta_data"),
    ({"hostname": 5}, "cloud_init.hostname", "5 is not a string", "quote"),
    ({"hostname": "web_1"}, "cloud_init.hostname", "'web_1' is not a valid host name",
     "labels of 1-63"),
    ({"hostname": "-web"}, "cloud_init.hostname", "not a valid host name", ""),
    ({"hostname": "  "}, "cloud_init.hostname", "is empty", ""),
    ({"users": {"name": "a"}}, "cloud_init.users", "a mapping is not a list", "YAML list"),
    ({"users": ["admin"]}, "cloud_init.users[0]", "'admin' is not a mapping", "'key: value'"),
    ({"users": [{"nmae": "a"}]}, "cloud_init.users[0].nmae", "unknown key",
     "did you mean 'name'?"),
    ({"users": [{"ssh_authorized_keys": []}]}, "cloud_init.users[0].name", "is required",
     "account name"),
    ({"users": [{"name": ""}]}, "cloud_init.users[0].name", "is empty", ""),
    ({"users": [{"name": "Admin"}]}, "cloud_init.users[0].name",
     "'Admin' is not a valid user name", "lower-case"),
    ({"users": [{"name": "default"}]}, "cloud_init.users[0].name", "image's own user",
     "cloud_init.ssh_authorized_keys"),
    ({"users": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}, "cloud_init.users[2].name",
     "'a' is already listed at cloud_init.users[0]", "merge"),
    ({"users": [{"name": "a", "sudo": "yes"}]}, None, "", ""),  # a rule string is accepted
    ({"users": [{"name": "a", "sudo": 1}]}, "cloud_init.users[0].sudo",
     "1 is not true, false or a sudoers rule", "NOPASSWD"),
    ({"users": [{"name": "a", "sudo": " "}]}, "cloud_init.users[0].sudo", "not true, false", ""),
    ({"users": [{"name": "root", "sudo": True}]}, "cloud_init.users[0].sudo",
     "root needs no sudo rule", "remove"),
    ({"users": [{"name": "a", "ssh_authorized_keys": "ssh-ed25519 AAAA"}]},
     "cloud_init.users[0].ssh_authorized_keys", "is not a list", "ssh-ed25519"),
    ({"ssh_authorized_keys": [""]}, "cloud_init.ssh_authorized_keys[0]", "is empty", ""),
    ({"ssh_authorized_keys": [None]}, "cloud_init.ssh_authorized_keys[0]",
     "null is not a string", ""),
    ({"ssh_authorized_keys": ["ssh-ed25519"]}, "cloud_init.ssh_authorized_keys[0]",
     "does not look like an OpenSSH public key", ".pub"),
    ({"ssh_authorized_keys": ["AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleB me@laptop"]},
     "cloud_init.ssh_authorized_keys[0]", "does not look like an OpenSSH public key", ""),
    ({"ssh_authorized_keys": ["-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n"]},
     "cloud_init.ssh_authorized_keys[0]", "is a private key", ""),
    ({"ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleBW"]},
     "cloud_init.ssh_authorized_keys[0]", "truncated key", ""),
    ({"ssh_authorized_keys": ["ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleBWHlnhse"
                              "LcB6KFFD4MBTA4"]},
     "cloud_init.ssh_authorized_keys[0]", "not a ssh-rsa key", ""),
    ({"user_data": 3}, "cloud_init.user_data", "3 is neither a mapping nor text", "'|' block"),
    ({"user_data": ""}, "cloud_init.user_data", "is empty", ""),
    ({"user_data": "packages: [htop]\n"}, "cloud_init.user_data",
     "cloud-init ignores text starting 'packages: [htop]'", "#cloud-config"),
    ({"user_data": "#cloud-config\npackages: [htop\n"}, "cloud_init.user_data",
     "is not valid YAML at line 3", ""),
    ({"user_data": "#cloud-config\n- a\n"}, "cloud_init.user_data", "is not a mapping", ""),
    ({"user_data": {"bootcmd": [datetime.date(2020, 1, 1)]}}, "cloud_init.user_data.bootcmd[0]",
     "(date) is not a string, number", "quote"),
    ({"user_data": {1: "x"}}, "cloud_init.user_data", "key 1 is not a string", "quote"),
    ({"user_data": {"a": {"": 1}}}, "cloud_init.user_data.a", "has an empty key", ""),
    ({"user_data": {"x": float("nan")}}, "cloud_init.user_data.x", "is not a finite number",
     ""),
    ({"meta_data": ["a"]}, "cloud_init.meta_data", "a list is not a mapping", ""),
    ({"meta_data": {"instance-id": "i-1"}}, "cloud_init.meta_data.instance-id",
     "is set by maqet", "derives it from the seed's content"),
    ({"network_config": {"ethernets": {}}}, "cloud_init.network_config.version",
     "needs 'version: 1' or 'version: 2'", "netplan"),
    ({"network_config": {"version": True}}, "cloud_init.network_config.version",
     "needs 'version: 1' or 'version: 2'", ""),
    ({"network_config": {"network": {"version": 3}}},
     "cloud_init.network_config.network.version", "needs 'version: 1'", ""),
    ({"network_config": "version: [2\n"}, "cloud_init.network_config", "is not valid YAML",
     ""),
    ({"network_config": "- eth0\n"}, "cloud_init.network_config", "is not a mapping", ""),
    ({"network_config": " "}, "cloud_init.network_config", "is empty", "DHCP"),
    ({"network_config": 2}, "cloud_init.network_config", "2 is not a mapping", ""),
    # shortcuts and explicit data never both set one key
    ({"hostname": "a", "user_data": {"hostname": "b"}}, "cloud_init.user_data.hostname",
     "is also set by cloud_init.hostname", "keep one of the two"),
    ({"users": [{"name": "a"}], "user_data": {"users": []}}, "cloud_init.user_data.users",
     "is also set by cloud_init.users", ""),
    ({"users": [{"name": "root"}], "user_data": {"disable_root": True}},
     "cloud_init.user_data.disable_root", "also set by cloud_init.users (the root entry)", ""),
    ({"hostname": "a", "meta_data": {"local-hostname": "b"}},
     "cloud_init.meta_data.local-hostname", "is also set by cloud_init.hostname", ""),
    ({"users": [{"name": "a"}], "user_data": "#!/bin/sh\n"}, "cloud_init.user_data",
     "is raw text, so maqet cannot add 'users' to it", "write user_data as a mapping"),
]


@pytest.mark.parametrize(("section", "path", "message", "hint"), BAD,
                         ids=[str(i) for i in range(len(BAD))])
def test_bad_sections_are_refused_with_path_message_and_hint(
        section: Any, path: str | None, message: str, hint: str, ed25519: str):
    if path is None:
        normalize(section)
        return
    with pytest.raises(ConfigError) as caught:
        normalize(section)
    err = caught.value
    assert err.path == path
    assert message in err.message
    assert hint in (err.hint or "")
    assert "\n" not in str(err)
    assert str(err).startswith(f"{path}: ")


def test_raw_user_data_refuses_the_keys_shortcut_but_takes_hostname(ed25519: str):
    with pytest.raises(ConfigError, match="cannot add 'ssh_authorized_keys'"):
        normalize({"ssh_authorized_keys": [ed25519], "user_data": "#cloud-config\n"})
    assert normalize({"hostname": "web1", "user_data": "#!/bin/sh\n"})["hostname"] == "web1"


def test_the_error_path_follows_the_section_path():
    with pytest.raises(ConfigError) as caught:
        normalize({"users": [{"name": 7}]}, path="vms[2].cloud_init")
    assert caught.value.path == "vms[2].cloud_init.users[0].name"


def test_a_root_user_and_the_default_users_keys_may_be_combined(ed25519: str, rsa: str):
    out = normalize({"users": [{"name": "root", "ssh_authorized_keys": [ed25519]}],
                     "ssh_authorized_keys": [rsa]})
    assert out["users"][0]["name"] == "root"
    assert out["ssh_authorized_keys"] == [rsa]


def test_authorized_key_options_and_comments_are_kept(ed25519: str):
    line = f'from="10.0.0.0/8",no-pty {ed25519}'
    assert normalize({"ssh_authorized_keys": [line]})["ssh_authorized_keys"] == [line]
