# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Logic of maqet_console (private to this collection): write to a VM's serial console,
wait for a regex, and return what the console printed in between.

Three engine calls at most: ``write_console`` (its reply says the console offset the
text was written at), ``wait_console`` from that offset (or from ``since``, or from the
start of this boot), ``read_console`` between where the task started looking and the
end of the match.
"""

from __future__ import annotations

from ansible_collections.maqet.vm.plugins.module_utils._engine import (
    argument_spec,
    context,
    exit_task,
    require_engine,
    run,
)

# Engine default of wait_console (maqet_engine.constants.SERIAL_WAIT_TIMEOUT_S).
DEFAULT_TIMEOUT = 60.0

CONSOLE_ARGUMENT_SPEC = argument_spec(
    vm={"type": "str", "required": True, "aliases": ["name"]},
    text={"type": "str"},
    wait={"type": "str"},
    since={"type": "int"},
    timeout={"type": "float", "default": DEFAULT_TIMEOUT},
)
CONSOLE_REQUIRED_ONE_OF = [("text", "wait")]


def converse(module):
    """The task result: write, wait, read (see the module doc)."""
    from maqet_engine import engine

    params = module.params
    ctx = context(module)
    vm, text, pattern = params["vm"], params["text"], params["wait"]
    task = {"changed": text is not None}
    since = params["since"] if params["since"] is not None else "boot"
    if text is not None:
        written = engine.write_console(ctx, vm, text, timeout=params["timeout"])
        if module.check_mode:  # not sent: nothing to wait for
            return task
        task["sent"] = written.data["sent"]
        if params["since"] is None:
            since = written.data["offset"]
    if pattern is None:
        return task
    found = engine.wait_console(ctx, vm, pattern, since=since, timeout=params["timeout"]).data
    printed = engine.read_console(ctx, vm, since=since, until=found["offset"]).data
    task.update(match=found["match"], offset=found["offset"], since=printed["since"],
                output=printed["text"], output_lines=printed["text"].splitlines(),
                truncated=printed["truncated"])
    return task


def run_console(module):
    """Body of maqet_console."""
    require_engine(module)
    if module.params["timeout"] < 0:
        module.fail_json(msg="timeout must not be negative")
    if module.params["since"] is not None and module.params["since"] < 0:
        module.fail_json(msg="since must be a console offset >= 0")
    exit_task(module, **run(module, lambda: converse(module), vm=module.params["vm"]))
