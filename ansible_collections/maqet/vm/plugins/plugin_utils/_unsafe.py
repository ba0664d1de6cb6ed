# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""``make_unsafe``: mark data from outside Ansible (VM names, tags, definitions) so
that it is never templated. Strings without template characters stay plain."""

from __future__ import annotations

import re
from collections.abc import Mapping, Set

from ansible.module_utils.common.collections import is_sequence
from ansible.utils.unsafe_proxy import AnsibleUnsafe, wrap_var

_TEMPLATE_CHARS = re.compile(r"[{}%#]")


def make_unsafe(value):
    if value is None or isinstance(value, AnsibleUnsafe):
        return value
    if isinstance(value, Mapping):
        return {make_unsafe(key): make_unsafe(item) for key, item in value.items()}
    if isinstance(value, Set):
        return {make_unsafe(item) for item in value}
    if is_sequence(value):
        return type(value)(make_unsafe(item) for item in value)
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        return wrap_var(value) if _TEMPLATE_CHARS.search(text) else value
    if isinstance(value, str):
        return wrap_var(value) if _TEMPLATE_CHARS.search(value) else value
    return value
