"""The reference text of one config key, for `mqtt-bridge check-config --explain KEY`.

Owns: walking the pydantic config models into key paths (`mqtt.protocol`, `routes[].image.url.timeout_s`,
`routes[].deepstream.sensor_sizes.*.width`) and rendering each key's type, default, allowed values and description
from its `Field`. The models' descriptions are the single source of the text: nothing here repeats it. Must not do
I/O (the caller prints).
"""

from __future__ import annotations

import difflib
import re
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.sections import ByteSize

__all__ = ["KeyDoc", "explain", "key_docs", "nearest_keys"]

_INDEX = re.compile(r"\[\d*\]")
_SIZE_PARSER = get_args(ByteSize)[1]
_SIZE_TYPE = "size in bytes (an integer, or a string such as 512MiB, 2GiB, 500 MB)"
_CONSTRAINTS = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "<="),
                (annotated_types.Lt, "lt", "<"))


@dataclass(frozen=True)
class KeyDoc:
    """What the reference says about one key: its path, type, default, allowed values and description."""

    path: str
    type_name: str
    default: str
    allowed: str
    description: str
    keys: tuple[str, ...] = ()  # a section's own keys

    def render(self, width: int = 100) -> str:
        """The key's reference text, one `label: value` entry each (allowed values only when there is a rule)."""
        entries = [("type", self.type_name), ("default", self.default), ("allowed", self.allowed),
                   ("description", self.description or "(none)"), ("keys", ", ".join(self.keys))]
        lines = [self.path]
        for label, text in entries:
            if text:
                lines.extend(textwrap.wrap(text, width, initial_indent=f"  {label + ':':<13}",
                                           subsequent_indent=" " * 15, break_on_hyphens=False))
        return "\n".join(lines)


def key_docs() -> dict[str, KeyDoc]:
    """Every key of the config file (sections and leaves), by path, in the models' order."""
    return {doc.path: doc for doc in _walk(BridgeConfig, "")}


def explain(key: str) -> KeyDoc | None:
    """The reference of `key` (list indices may be given, `routes[0].name`; any name stands for a map's `*`)."""
    docs = key_docs()
    wanted = _INDEX.sub("[]", key.strip()).removesuffix("[]")
    if wanted in docs:
        return docs[wanted]
    parts = wanted.split(".")
    for path, doc in docs.items():  # a map's keys are the user's own names: `sensor_sizes.cam1.width`
        known = path.split(".")
        if "*" in known and len(known) == len(parts) and all(k in ("*", p) for k, p in zip(known, parts, strict=True)):
            return doc
    return None


def nearest_keys(key: str, count: int = 5) -> list[str]:
    """The key paths closest to `key` (difflib), for a typo; also keys whose last name is the one asked for."""
    docs = list(key_docs())
    wanted = _INDEX.sub("[]", key.strip())
    close = difflib.get_close_matches(wanted, docs, n=count, cutoff=0.6)
    leaf = wanted.rsplit(".", 1)[-1]
    same_leaf = [path for path in docs if path.rsplit(".", 1)[-1] == leaf and path not in close]
    return list(dict.fromkeys(close[: max(1, count - len(same_leaf))] + same_leaf))[:count]


# --- walking the models -----------------------------------------------------------------------------------------

def _walk(model: type[BaseModel], prefix: str) -> Iterator[KeyDoc]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        nested, suffix = _nested_model(annotation)
        is_size = _is_size(field)
        yield KeyDoc(path=path, type_name=_SIZE_TYPE if is_size else _type_name(annotation),
                     default=_default(field, is_size), allowed=_allowed(field, annotation),
                     description=field.description or "",
                     keys=tuple(nested.model_fields) if nested is not None else ())
        if nested is not None:
            yield from _walk(nested, f"{path}{suffix}.")


def _is_size(field: FieldInfo) -> bool:
    """The key is a `ByteSize` (`2GiB`): its size parser is among the field's validators."""
    return any(m is _SIZE_PARSER for m in field.metadata)


def _without_none(annotation: object) -> object:
    """`X | None` -> `X` (a `None` default is shown as the default, not as a type)."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _nested_model(annotation: object) -> tuple[type[BaseModel] | None, str]:
    """The model a key holds (directly, as list items `[]`, or as map values `.*`) and the path part it adds."""
    annotation = _without_none(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0], "[]"
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return args[1], ".*"
    return None, ""


def _type_name(annotation: object) -> str:
    annotation = _without_none(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return "string (one of the allowed values)" if all(isinstance(a, str) for a in args) else "one of the allowed"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args if arg is not type(None))
    if origin is list:
        return f"list of {_plural(_type_name(args[0]))}" if args else "list"
    if origin is tuple:
        return f"list of {len(args)} {_plural(_type_name(args[0]))}" if args else "list"
    if origin is dict:
        return f"map of {_plural(_type_name(args[0]))} to {_plural(_type_name(args[1]))}" if args else "map"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "section"
        if issubclass(annotation, SecretStr):
            return "secret string (never printed)"
        if issubclass(annotation, Path):
            return "path"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__)
    return str(annotation)


def _plural(name: str) -> str:
    return {"string": "strings", "integer": "integers", "number": "numbers", "boolean": "booleans",
            "section": "sections", "path": "paths"}.get(name, name)


def _default(field: FieldInfo, is_size: bool) -> str:
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if value is None or value is PydanticUndefined:
        return "(unset)"
    if isinstance(value, BaseModel):
        return "(the section's own defaults)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Path):
        return str(value)
    if is_size and isinstance(value, int):
        return f"{value} ({_size_text(value)})"
    if isinstance(value, list | tuple | dict) and not value:
        return "[]" if not isinstance(value, dict) else "{}"
    if isinstance(value, tuple):
        return f"[{', '.join(str(v) for v in value)}]"
    return str(value)


def _size_text(size: int) -> str:
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def _allowed(field: FieldInfo, annotation: object) -> str:
    """The values a key accepts beyond its type: an enumeration, a numeric range, a length, a pattern."""
    rules: list[str] = []
    choices = _literal_values(annotation)
    if choices:
        rules.append(", ".join(f'"{c}"' if isinstance(c, str) else str(c) for c in choices))
    metadata = list(field.metadata) + _annotated_metadata(annotation)
    for kind, attr, sign in _CONSTRAINTS:
        rules.extend(f"{sign} {getattr(m, attr)}" for m in metadata if isinstance(m, kind))
    for m in metadata:
        if isinstance(m, annotated_types.MinLen) and m.min_length:
            rules.append(f"at least {m.min_length} {'item' if _is_list(annotation) else 'character'}(s)")
        if isinstance(m, annotated_types.MaxLen):
            rules.append(f"at most {m.max_length} {'item' if _is_list(annotation) else 'character'}(s)")
        pattern = getattr(m, "pattern", None)
        if isinstance(pattern, str):
            rules.append(f"matching {pattern}")
    return "; ".join(dict.fromkeys(rules))


def _literal_values(annotation: object) -> tuple[object, ...]:
    annotation = _without_none(annotation)
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _annotated_metadata(annotation: object) -> list[object]:
    annotation = _without_none(annotation)
    return list(get_args(annotation)[1:]) if get_origin(annotation) is typing.Annotated else []


def _is_list(annotation: object) -> bool:
    return get_origin(_without_none(annotation)) in (list, tuple, dict)
