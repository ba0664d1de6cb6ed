"""A qcow2 disk from an image (``image``, ``checksum``): what the spec stores, so that an
unchanged definition keeps its hash and the image cache's path never enters it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.definition import Spec
from maqet_engine.definition.hostpaths import recheck
from maqet_engine.errors import ConfigError
from maqet_engine.paths import Paths

Parse = Callable[..., Spec]
HEX = "0123456789abcdef" * 4


def disk(parse: Parse, **entry: Any) -> dict[str, Any]:
    return parse({"name": "vm", "storage": [{"name": "root", "type": "qcow2", **entry}]}
                 ).data["storage"][0]


def test_local_image_is_stored_as_an_absolute_path(parse: Parse, defdir: Path, paths: Paths):
    assert disk(parse, image="base.qcow2") == {
        "name": "root", "type": "qcow2", "file": str(paths.vm_data("vm").root / "root.qcow2"),
        "size": None, "interface": "virtio", "readonly": False, "backing": None,
        "image": str(defdir / "base.qcow2"), "checksum": None}


def test_file_url_relative_path_and_absolute_path_are_one_spec(parse: Parse, defdir: Path):
    forms = ["base.qcow2", str(defdir / "base.qcow2"), f"file://{defdir}/base.qcow2",
             f"file://localhost{defdir}/./base.qcow2"]
    specs = {parse({"name": "vm", "storage": [{"name": "root", "type": "qcow2", "image": form}]}
                   ).hash for form in forms}
    assert len(specs) == 1


def test_checksum_digest_is_stored_in_lower_case(parse: Parse):
    entry = disk(parse, image="https://example.org/img/debian.qcow2",
                 checksum=f"SHA256:{HEX.upper()}")
    assert entry["image"] == "https://example.org/img/debian.qcow2"
    assert entry["checksum"] == f"sha256:{HEX}"


def test_checksum_url_is_kept_as_given(parse: Parse):
    sums = "sha256:https://example.org/img/SHA256SUMS"
    entry = disk(parse, image="https://example.org/img/debian.qcow2", checksum=sums)
    assert entry["checksum"] == sums


def test_size_is_optional_and_normalized(parse: Parse):
    assert disk(parse, image="base.qcow2")["size"] is None
    assert disk(parse, image="base.qcow2", size="20G")["size"] == 20 * 1024**3


def test_a_disk_without_image_stores_no_image_keys(parse: Parse):
    """Definitions written before images existed keep their spec, hence their hash."""
    entry = disk(parse, size="1G")
    assert "image" not in entry and "checksum" not in entry


def test_the_spec_does_not_depend_on_the_image_cache(parse: Parse, paths: Paths):
    """The cache is filled at start, never at define time; its path is never stored."""
    spec = parse({"name": "vm", "storage": [
        {"name": "root", "type": "qcow2", "image": "https://example.org/d.qcow2",
         "checksum": f"sha256:{HEX}"}]})
    assert "images" not in spec.to_json()
    assert not paths.data.exists()


def test_a_local_image_is_judged_again_at_start(parse: Parse, defdir: Path, paths: Paths,
                                                tmp_path: Path):
    """A local image re-pointed (symlink) into /etc since the definition was stored is
    refused when the VM starts, as backing images are."""
    link = defdir / "link.qcow2"
    link.symlink_to(defdir / "base.qcow2")
    spec = parse({"name": "vm", "storage": [{"name": "root", "type": "qcow2",
                                             "image": "link.qcow2"}]})
    link.unlink()
    link.symlink_to("/etc/hostname")
    with pytest.raises(ConfigError, match=r"storage\[0\].image: .* is in /etc") as info:
        recheck(dict(spec.data), maqet_dirs=(paths.data, paths.runtime),
                vm_dir=paths.vm_data("vm").root)
    assert info.value.path == "storage[0].image"


def test_a_remote_image_is_never_touched_at_define_time(parse: Parse, paths: Paths):
    data = parse({"name": "vm", "storage": [
        {"name": "root", "type": "qcow2", "image": "http://127.0.0.1:9/d.qcow2",
         "checksum": f"sha256:{HEX}"}]}).data
    recheck(data, maqet_dirs=(paths.data, paths.runtime), vm_dir=paths.vm_data("vm").root)
