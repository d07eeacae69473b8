"""Loading the configuration: YAML, `${VAR}` interpolation, secret files, errors with key paths, redaction.

Owns: the one entry that turns a YAML file (`load_config`) or an already-parsed document (`parse_config`) into a
fully validated, frozen `BridgeConfig`, and every error message about it (each with its key path, e.g.
`routes[0].use_case`). Fully validated means: the pydantic models, and then `validate`, the checks that need the
compiled routes (topic and value templates, receipt topics, image references), all problems reported together.
Every command (`run`, `check-config`, `decode`, the operator tools), the demo and the `Service` go through it.
This is the only module that reads the environment. Must not start anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import (
    ValidationError,
)

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.errors import ConfigError

__all__ = ["load_config", "parse_config", "redacted", "validate"]


_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: object, path: str, env: dict[str, str], problems: list[tuple[str, str]]) -> object:
    """Replace `${VAR}` and `${VAR:-default}` in every string of the parsed YAML; `$$` is a literal `$`."""
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env, problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return node

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        problems.append((path, f"environment variable {name} is not set (use ${{{name}:-default}})"))
        return ""

    return _ENV_RE.sub(substitute, node)


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "literal[")):
            continue
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def parse_config(raw: object, env: dict[str, str] | None = None, base_dir: Path | None = None) -> BridgeConfig:
    """Validate an already-parsed YAML document fully (the models, then `validate`). Raises ConfigError listing
    every problem with its key path."""
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        raise ConfigError([("(top level)", "the file must hold a mapping of sections (mqtt, api, routes, ...)")])
    try:
        data = _interpolate(raw, "", dict(os.environ) if env is None else env, problems)
    except RecursionError:  # a YAML alias that contains itself, or absurd nesting
        raise ConfigError([("(top level)", "the document refers to itself or is nested too deeply")]) from None
    if problems:
        raise ConfigError(problems)
    try:
        config = BridgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([(_loc_to_path(err["loc"]), err["msg"]) for err in exc.errors()]) from None
    if base_dir is not None and not config.buffer.path.is_absolute():
        buffer = config.buffer.model_copy(update={"path": (base_dir / config.buffer.path)})
        config = config.model_copy(update={"buffer": buffer})
    return validate(config)


def validate(config: BridgeConfig) -> BridgeConfig:
    """The checks that need the compiled routes; returns `config` unchanged, or raises ConfigError listing every
    problem with its key path. `parse_config` calls it, and so does the `Service` for a config built elsewhere.

    The route templates come first: receipts and image references are compiled on top of them, so when a route's
    template is wrong their checks would only repeat its problems.
    """
    # deferred: routing, receipts and image references pull in the decoders and Pillow, which `--version` and
    # `schema` do not need
    from mqtt_bridge.images.reference_plans import compile_image_references  # noqa: PLC0415
    from mqtt_bridge.observe.receipts import compile_receipt_topics  # noqa: PLC0415
    from mqtt_bridge.routing.router import Router  # noqa: PLC0415

    routes = list(config.routes)
    Router(routes)  # raises ConfigError with every template problem of every route
    problems: list[tuple[str, str]] = []
    for check in (compile_receipt_topics, compile_image_references):
        try:
            check(routes)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: Path, env: dict[str, str] | None = None) -> BridgeConfig:
    """Read and validate a YAML config file. Relative buffer paths stay relative to the working directory."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {path}: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([("(file)", f"{path} is not UTF-8 text (byte {exc.start})")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(file)"
        raise ConfigError([(where, f"invalid YAML: {getattr(exc, 'problem', exc)}")]) from None
    except RecursionError:
        raise ConfigError([("(file)", "invalid YAML: nested too deeply")]) from None
    return parse_config(raw, env)


def redacted(config: BridgeConfig) -> dict[str, object]:
    """The effective config as plain data, with every secret replaced by `**********`."""
    dumped: dict[str, object] = config.model_dump(mode="json")
    return dumped

