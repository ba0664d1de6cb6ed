"""Importing the image package stays cheap: the CLI's `maqet ls` imports the engine, and
the network, hashing and subprocess modules are only for the operations that use them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
NOT_AT_IMPORT = ("asyncio", "yaml", "urllib.request", "http.client", "ssl", "socket",
                 "hashlib", "json", "logging", "subprocess", "maqet_engine.snapshots",
                 "maqet_engine.storage")


def test_importing_the_package_imports_nothing_heavy():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import maqet_engine.images"],
                          capture_output=True, text=True, check=True, env=env)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "maqet_engine.images.cache" in imported  # the measurement saw the package
    assert not imported & set(NOT_AT_IMPORT), imported & set(NOT_AT_IMPORT)
