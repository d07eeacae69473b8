"""Writing a config document as YAML: the one place that emits YAML (loading is `config.load`).

Owns: turning plain data (a starter config from `discover`) into YAML text a person edits next: keys in the
order given, block style, a header of `#` comment lines. Must not write files (the command does).
"""

from __future__ import annotations

import yaml

__all__ = ["dump_yaml"]


def dump_yaml(document: dict[str, object], header: list[str] | None = None) -> str:
    """`document` as YAML, preceded by `header` as comment lines."""
    lines = [f"# {line}".rstrip() for line in header or []]
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)
    return "\n".join([*lines, body]) if lines else body
