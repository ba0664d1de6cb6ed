"""QEMU's command line for a stored VM: built once, by the definition package's pure
``build_argv``, both for the runner to launch and for people to read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import QEMUUserMissing
from maqet_engine.paths import Paths
from maqet_engine.store import VMRecord


def qemu_user(env: Mapping[str, str] | None = None, *, check: bool = True) -> str | None:
    """Who QEMU drops to after start-up (``-runas``), or None (it stays the caller).

    Only root's QEMU drops: ``$MAQET_QEMU_USER`` or ``maqet-qemu``; ``root`` opts out.
    The user must exist (``check``; views skip it): a root maqet refuses to run QEMU as
    root by accident.

    :raise QEMUUserMissing: root, no opt-out, and no such user.
    """
    env = os.environ if env is None else env
    if os.geteuid() != 0:
        return None  # -runas needs root; an unprivileged QEMU is confined by its uid
    wanted = env.get(C.ENV_QEMU_USER) or C.DEFAULT_QEMU_USER
    if wanted == C.QEMU_USER_OPT_OUT:
        return None
    if check:
        import pwd

        try:
            entry = pwd.getpwnam(wanted)
        except KeyError:
            create = (C.QEMU_USER_CREATE if wanted == C.DEFAULT_QEMU_USER
                      else f"useradd --system --no-create-home {wanted}")
            raise QEMUUserMissing(
                f"maqet runs as root and the user {wanted!r} that QEMU drops to does not exist",
                hint=f"create it ({create}), or set {C.ENV_QEMU_USER}=root to run QEMU as "
                "root (see docs/security.md)") from None
        if entry.pw_uid == 0:
            return None
    return wanted


def command_line(record: VMRecord, paths: Paths, *, qmp_fd: int | str = C.QMP_FD_PLACEHOLDER,
                 agent_fd: int | str = C.AGENT_FD_PLACEHOLDER,
                 accel: str | None = None, launching: bool = True,
                 backends: Mapping[int, Mapping[str, Any]] | None = None) -> list[str]:
    """The argv that runs ``record``'s stored definition, confined: under seccomp
    (``-sandbox``) and, when maqet is root, as the unprivileged :func:`qemu_user`.

    :param qmp_fd: the QMP socket's fd (the spawner's); views leave the placeholder.
    :param agent_fd: the guest agent's socket's fd (``agent: true``), likewise.
    :param accel: the accelerator in use (a running VM's); None resolves the
        definition's ``accel`` on this host.
    :param launching: this command line will run (views pass False): refuse a missing
        QEMU user, and judge the definition's host paths again as they resolve now (a
        symlink re-pointed since the definition was stored), giving QEMU the resolved
        directory of each share.
    :param backends: the host side of the VM's NICs on named networks, by position
        (``engine.networks.resolve``: an interface's address, a tap device's fd).
    :raise ConfigError: a host path that now resolves somewhere maqet refuses.
    """
    from maqet_engine.definition import Spec, build_argv, resolve_accel

    spec = Spec.from_json(record.spec_json)
    if launching:
        from maqet_engine.definition.hostpaths import recheck

        data = Spec.from_json(record.spec_json).data  # a copy of our own to resolve in
        recheck(data, maqet_dirs=(paths.data, paths.runtime),
                vm_dir=paths.vm_data(record.name).root)
        spec = Spec(data)
    return build_argv(spec, runtime=paths.vm_runtime(record.id),
                      data=paths.vm_data(record.name), qmp_fd=qmp_fd, agent_fd=agent_fd,
                      accel=accel or resolve_accel(spec.data["accel"]),
                      run_as=qemu_user(check=launching), sandbox=True, backends=backends)
