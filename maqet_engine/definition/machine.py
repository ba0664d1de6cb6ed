"""What the argv needs to know about the machine type: where IDE devices go."""

from __future__ import annotations

import re

from maqet_engine import constants as C
from maqet_engine.definition.check import show

_I440FX_RE = re.compile(r"pc|pc-i440fx-.*|pc-[0-9].*", re.ASCII)
_Q35_RE = re.compile(r"q35|pc-q35-.*", re.ASCII)


class NoSlotLeft(Exception):
    """Every IDE position of the machine is taken; the message says how many exist."""


def ide_layout(machine: str | None) -> tuple[int, int] | None:
    """(buses, units per bus) of a known x86 machine, ``None`` for any other.

    An unset machine is QEMU's x86 default, ``pc`` (i440fx).
    """
    name = (machine or "pc").split(",", 1)[0]
    if _Q35_RE.fullmatch(name):
        return C.IDE_LAYOUT_Q35
    if _I440FX_RE.fullmatch(name):
        return C.IDE_LAYOUT_I440FX
    return None


class DeviceSlots:
    """Hands out device positions in entry order, the same way for validation and argv."""

    def __init__(self, machine: str | None) -> None:
        self.machine = machine
        self._ide_layout = ide_layout(machine)
        self._ide_used = 0

    def ide(self) -> str:
        """``,bus=ide.N[,unit=U]`` for the next IDE device ("" when QEMU places it).

        :raise NoSlotLeft: the machine has no free IDE position.
        """
        used, self._ide_used = self._ide_used, self._ide_used + 1
        if self._ide_layout is None:
            if used:
                raise NoSlotLeft(f"maqet can place only one IDE device on machine "
                                 f"{show(self.machine)} (it knows the IDE layout of q35 "
                                 "and pc)")
            return ""
        buses, units = self._ide_layout
        if used >= buses * units:
            raise NoSlotLeft(f"machine {show(self.machine or 'pc')} has only {buses * units} "
                             "IDE positions")
        bus, unit = divmod(used, units)
        return f",bus=ide.{bus}" + (f",unit={unit}" if units > 1 else "")
