"""A start that downloads a disk's image: the CLI's bar shows how far the download got
(the engine calls the callback ``ctx.progress`` yields); actions are spelled for people."""

from __future__ import annotations

import io

from maqet_engine.cli.context import CLIContext
from maqet_engine.cli.progress import Indeterminate
from maqet_engine.engine import EngineContext, describe_action

MiB = 1024 * 1024


def test_a_transfer_shows_after_the_message():
    bar = Indeterminate(io.StringIO(), "starting web1", clock=lambda: 0.0)
    assert bar.frame(80).endswith(" starting web1... 0.0s")
    bar.transfer(12 * MiB, 24 * MiB)
    assert bar.frame(80).endswith(" starting web1: image 12M of 24M (50%)... 0.0s")
    bar.transfer(3 * MiB, None)  # no Content-Length
    assert bar.frame(80).endswith(" starting web1: image 3M... 0.0s")


def test_no_callback_without_a_terminal(tmp_path):
    ctx = CLIContext(base=EngineContext.for_home(str(tmp_path)), json=False, debug=False)
    with ctx.progress("starting web1") as transfer:  # pytest's stderr is no TTY
        assert transfer is None


def test_image_actions_for_people():
    digest = "sha256:" + "ab" * 32
    assert describe_action({"action": "fetch_image", "location": "https://x/d.qcow2",
                            "digest": digest, "size": 3 * MiB}) == \
        "fetched image https://x/d.qcow2 (sha256:abababababab, 3.0 MiB)"
    assert describe_action({"action": "fetch_image", "location": "https://x/d.qcow2",
                            "digest": None}) == "fetched image https://x/d.qcow2"
    assert describe_action({"action": "create_disk", "storage": "root", "path": "/p",
                            "size": 2 * 1024 * MiB, "backing": digest,
                            "image": "https://x/d.qcow2"}) == \
        "created disk root (2G, overlay on image sha256:abababababab)"
    assert describe_action({"action": "create_disk", "storage": "root", "path": "/p",
                            "size": None, "backing": "/srv/d.qcow2", "image": "/srv/d.qcow2"}) \
        == "created disk root (overlay on image /srv/d.qcow2)"
    assert describe_action({"action": "write_seed", "path": "/p/cidata.iso",
                            "instance_id": "maqet-web1-0123456789abcdef"}) == \
        "wrote the cloud-init seed (maqet-web1-0123456789abcdef)"
    assert describe_action({"action": "remove_image", "digest": digest, "size": 1024,
                            "location": None}) == "removed image (sha256:abababababab, 1.0 KiB)"
