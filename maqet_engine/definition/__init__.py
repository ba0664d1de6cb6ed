"""VM definitions: YAML -> validated, normalized :class:`Spec` -> QEMU argv.

Pure code apart from reading the definition files and checking that the paths they
name exist. ``load_definition`` reads and merges, ``parse_spec`` validates and
normalizes, ``build_argv`` spells the QEMU command line. PyYAML is imported only
when a definition is read, so importing this package stays cheap.
"""

from maqet_engine.definition.argv import build_argv
from maqet_engine.definition.host import resolve_accel
from maqet_engine.definition.load import load_definition
from maqet_engine.definition.machine import DeviceSlots
from maqet_engine.definition.model import Spec
from maqet_engine.definition.storage import (
    Claim,
    StorageArgs,
    StorageRegistry,
    StorageType,
    default_registry,
)
from maqet_engine.definition.units import format_size, parse_size
from maqet_engine.definition.validate import parse_spec, validate_vm_name

__all__ = [
    "Claim",
    "DeviceSlots",
    "Spec",
    "StorageArgs",
    "StorageRegistry",
    "StorageType",
    "build_argv",
    "default_registry",
    "format_size",
    "load_definition",
    "parse_size",
    "parse_spec",
    "resolve_accel",
    "validate_vm_name",
]
