"""QEMU's command line for a stored VM: built once, by the definition package's pure
``build_argv``, both for the runner to launch and for people to read."""

from __future__ import annotations

from maqet_engine import constants as C
from maqet_engine.paths import Paths
from maqet_engine.store import VMRecord


def command_line(record: VMRecord, paths: Paths, *, qmp_fd: int | str = C.QMP_FD_PLACEHOLDER,
                 accel: str | None = None) -> list[str]:
    """The argv that runs ``record``'s stored definition.

    :param qmp_fd: the QMP socket's fd (the spawner's); views leave the placeholder.
    :param accel: the accelerator in use (a running VM's); None resolves the
        definition's ``accel`` on this host.
    """
    from maqet_engine.definition import Spec, build_argv, resolve_accel

    spec = Spec.from_json(record.spec_json)
    return build_argv(spec, runtime=paths.vm_runtime(record.id),
                      data=paths.vm_data(record.name), qmp_fd=qmp_fd,
                      accel=accel or resolve_accel(spec.data["accel"]))
