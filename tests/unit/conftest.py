"""Unit tests need no QEMU: a test here that asks for it is in the wrong folder."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    wrong = [item.nodeid for item in items if item.get_closest_marker("qemu")
             and "/unit/" in item.nodeid.replace("\\", "/")]
    if wrong:
        raise pytest.UsageError(f"tests/unit must not need QEMU; move to tests/integration: "
                                f"{', '.join(wrong[:5])}")
