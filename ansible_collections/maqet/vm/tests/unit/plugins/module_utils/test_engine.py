from __future__ import annotations

import pytest

from ansible_collections.maqet.vm.plugins.module_utils import _engine


class FakeModule:
    def __init__(self):
        self.failed = None

    def fail_json(self, **kwargs):
        self.failed = kwargs
        raise SystemExit(1)


def test_common_spec_is_shared():
    spec = _engine.argument_spec(name={"type": "str"})
    assert spec["maqet_home"] == {"type": "path"} and spec["name"] == {"type": "str"}
    assert spec["op_id"] == {"type": "str"}
    assert "name" not in _engine.COMMON_ARGUMENT_SPEC


def test_engine_errors_become_one_line_failures():
    from maqet_engine.errors import ConfigError, QMPCommandError

    def bad_definition():
        raise ConfigError("'lots' is not a size", path="memory")

    module = FakeModule()
    with pytest.raises(SystemExit):
        _engine.run(module, bad_definition, name="vm1")
    assert module.failed["msg"] == "memory: 'lots' is not a size"
    assert module.failed["error_type"] == "ConfigError" and module.failed["exit_code"] == 2
    assert module.failed["path"] == "memory" and module.failed["name"] == "vm1"

    module = FakeModule()
    with pytest.raises(SystemExit):
        _engine.fail_from_error(module, QMPCommandError("device_del", "DeviceNotFound", "no"))
    assert module.failed["error_class"] == "DeviceNotFound"
    assert module.failed["command"] == "device_del"


def test_missing_engine_message_says_what_to_do(monkeypatch):
    module = FakeModule()
    monkeypatch.setattr(_engine, "HAS_MAQET_ENGINE", False)
    with pytest.raises(SystemExit):
        _engine.require_engine(module)
    msg = module.failed["msg"]
    assert "pip install maqet" in msg and "ansible_python_interpreter" in msg
    assert "\n" not in msg and module.failed["error_type"] == "MissingEngine"
