"""The maqet.vm.agent connection plugin with the engine's guest calls replaced by fakes
(the real thing: tests/ansible/test_ansible_agent.py against a real guest)."""

from __future__ import annotations

import io

import pytest

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import become_loader, connection_loader
from ansible_collections.maqet.vm.plugins.connection import agent as plugin


class FakeEngine:
    """Records the facade calls; ``reply`` is what guest_exec answers."""

    def __init__(self):
        self.calls = []
        self.reply = {"exitcode": 0, "signal": None, "stdout": b"out", "stderr": b"",
                      "stdout_truncated": False, "stderr_truncated": False}
        self.error = None
        self.EngineContext = self

    def for_home(self, home, check_mode=False):
        self.calls.append(("context", home))
        return "ctx"

    def guest_exec(self, ctx, vm, argv, **kwargs):
        self.calls.append(("exec", vm, argv, kwargs))
        if self.error is not None:
            raise self.error

        class Result:
            data = dict(self.reply)
        return Result()

    def put_file(self, ctx, vm, source, dest, **kwargs):
        self.calls.append(("put", vm, source, dest, kwargs))

    def fetch_file(self, ctx, vm, source, dest, **kwargs):
        self.calls.append(("fetch", vm, source, dest, kwargs))


@pytest.fixture
def fake(monkeypatch):
    fake = FakeEngine()
    monkeypatch.setattr(plugin, "engine", fake)
    return fake


@pytest.fixture
def connection(fake):
    conn = connection_loader.get("maqet.vm.agent", PlayContext(), io.StringIO())
    conn.set_options(var_options={"ansible_maqet_vm": "vm1", "ansible_maqet_home": "/srv/m",
                                  "ansible_maqet_agent_timeout": 7})
    return conn


def test_commands_run_through_sh_with_stdin_and_the_timeout(connection, fake):
    assert connection.exec_command("echo hi", in_data=b"payload") == (0, b"out", b"")
    assert fake.calls[0] == ("context", "/srv/m")
    vm, argv, kwargs = fake.calls[1][1:]
    assert vm == "vm1" and argv[:2] == ["/bin/sh", "-c"] and argv[2].endswith("; echo hi")
    assert kwargs == {"stdin": b"payload", "agent_timeout": 7.0}
    connection.exec_command("true")
    assert fake.calls[-1][3]["stdin"] is None  # no in_data: no stdin at all
    # Ansible's usual form: that shell runs the prologue too (one process less).
    connection.exec_command("/bin/sh -c '/usr/bin/python3 && sleep 0'")
    argv = fake.calls[-1][2]
    assert argv[:2] == ["/bin/sh", "-c"] and argv[2].endswith("; /usr/bin/python3 && sleep 0")
    connection.exec_command("sudo -u x /bin/sh -c 'id'")
    assert fake.calls[-1][2][2].endswith("; sudo -u x /bin/sh -c 'id'")


def test_a_signal_is_128_plus_it_and_cut_output_fails(connection, fake):
    fake.reply.update(exitcode=None, signal=15)
    assert connection.exec_command("x")[0] == 143
    fake.reply.update(exitcode=0, signal=None, stdout_truncated=True)
    with pytest.raises(AnsibleError, match="larger than the 16 MiB"):
        connection.exec_command("x")


def test_agent_errors_are_unreachable_command_errors_are_failures(connection, fake):
    from maqet_engine.errors import AgentCommandError, AgentUnavailable

    fake.error = AgentUnavailable("no guest agent answered guest-exec within 7 s")
    with pytest.raises(AnsibleConnectionFailure, match="VM vm1: no guest agent answered"):
        connection.exec_command("x")
    fake.error = AgentCommandError("guest-exec", "GenericError", "no such file")
    with pytest.raises(AnsibleError, match="no such file") as err:
        connection.exec_command("x")
    assert not isinstance(err.value, AnsibleConnectionFailure)


def with_become(connection, name, **options):
    become = become_loader.get(name)
    become.set_options(direct={"become_user": "nobody", **options})
    connection.set_become_plugin(become)
    command = become.build_become_command("id -un", connection._shell)
    return become, command


def test_become_output_is_stripped_and_checked(connection, fake):
    become, command = with_become(connection, "ansible.builtin.su")
    fake.reply["stdout"] = f"{become.success}\nnobody\n".encode()
    assert connection.exec_command(command) == (0, b"nobody\n", b"")
    fake.reply["stdout"] = b"su: must be suid\n"
    with pytest.raises(AnsibleError, match="become .* did not succeed"):
        connection.exec_command(command)


def test_a_sudo_password_goes_to_stdin_su_needs_a_terminal(connection, fake):
    become, command = with_become(connection, "ansible.builtin.sudo", become_pass="s3cret")
    fake.reply.update(stdout=f"{become.success}\nnobody\n".encode(),
                      stderr=f"{become.prompt}\n".encode())
    assert connection.exec_command(command, in_data=b"module") == (0, b"nobody\n", b"")
    assert fake.calls[-1][3]["stdin"] == b"s3cret\nmodule"
    command = with_become(connection, "ansible.builtin.su", become_pass="s3cret")[1]
    with pytest.raises(AnsibleError, match="needs a terminal"):
        connection.exec_command(command)


def test_files_go_through_the_engine(connection, fake, tmp_path):
    source = tmp_path / "f"
    source.write_bytes(b"x")
    connection.put_file(str(source), "/tmp/f")
    connection.fetch_file("/tmp/f", str(tmp_path / "g"))
    assert fake.calls[-2] == ("put", "vm1", str(source), "/tmp/f",
                              {"mode": None, "verify": False, "agent_timeout": 7.0})
    assert fake.calls[-1] == ("fetch", "vm1", "/tmp/f", str(tmp_path / "g"),
                              {"preserve_mode": False, "verify": False, "agent_timeout": 7.0})


def test_without_the_engine_it_says_how_to_install_it(connection, monkeypatch):
    monkeypatch.setattr(plugin, "engine", None)
    with pytest.raises(AnsibleError, match="pip install maqet"):
        connection.exec_command("true")
