"""Coverage-guided fuzzing with atheris (libFuzzer): the same property as `test_fuzz.py`, no input makes the
decoders, the ingest path or the config loader raise anything but the bridge's own errors.

Optional (atheris may not install everywhere): `make fuzz-atheris` runs each target for a while, or
`python -m tests.faults.fuzz_atheris decoders -max_total_time=60` one target (`decoders`, `ingest`, `config`).
A crash prints the input and writes it as `crash-*` in the working directory, as libFuzzer does.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]  # optional, untyped

with atheris.instrument_imports(include=["mqtt_bridge"]):
    from mqtt_bridge.config.load import load_config
    from mqtt_bridge.decode.base import Message
    from mqtt_bridge.decode.registry import DECODERS, build_decoder
    from mqtt_bridge.errors import ConfigError, DecodeError
    from mqtt_bridge.routing.router import Router
    from mqtt_bridge.transform.ingest import Ingestor
    from tests.faults import fuzzing

    # the registry imports the decoder modules on first use: do it here, so that they are instrumented too
    _ROUTES = {name: fuzzing.route_model(name) for name in DECODERS}
    for _name, _route in _ROUTES.items():
        build_decoder(_name, _route)
    _INGESTORS = {name: Ingestor(Router([route]), 64 * 1024) for name, route in _ROUTES.items()}
_CONFIG_FILE = Path(tempfile.mkdtemp(prefix="fuzz-config-")) / "config.yaml"
_TOPICS = ("factory/line1/cam1/detections", "frigate/events", "frigate/cam1/person/snapshot",
           "spBv1.0/plant/NBIRTH/edge1", "spBv1.0/plant/DDATA/edge1/cam1", "spBv1.0/STATE/host")


def fuzz_decoders(data: bytes) -> None:
    """One decoder (chosen by the input), two messages in a row (decoders keep state)."""
    provider = atheris.FuzzedDataProvider(data)
    name = DECODERS[provider.ConsumeIntInRange(0, len(DECODERS) - 1)]
    decoder = build_decoder(name, _ROUTES[name])
    for _ in range(2):
        topic = _TOPICS[provider.ConsumeIntInRange(0, len(_TOPICS) - 1)]
        payload = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 4096))
        with contextlib.suppress(DecodeError):
            decoder.decode(Message(topic, payload, time.time()))


def fuzz_ingest(data: bytes) -> None:
    """Arbitrary topic and payload bytes through `Ingestor.process`: never an internal_error, and whatever it
    returns can be committed (serialised)."""
    provider = atheris.FuzzedDataProvider(data)
    name = DECODERS[provider.ConsumeIntInRange(0, len(DECODERS) - 1)]
    if provider.ConsumeBool():
        topic = _TOPICS[provider.ConsumeIntInRange(0, len(_TOPICS) - 1)].encode()
    else:
        topic = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 40))
    result = _INGESTORS[name].process(topic, provider.ConsumeBytes(len(data)), time.time())
    for record in result.records:
        record.to_bytes()
    if result.dead_letter is not None:
        result.dead_letter.to_bytes()
        if result.dead_letter.reason == "internal_error":
            raise AssertionError(result.dead_letter.detail)


def fuzz_config(data: bytes) -> None:
    """Arbitrary bytes as the config file: a config or ConfigError."""
    _CONFIG_FILE.write_bytes(data)
    try:
        config = load_config(_CONFIG_FILE, env={})
        Router(list(config.routes))
    except ConfigError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {"decoders": fuzz_decoders, "ingest": fuzz_ingest,
                                               "config": fuzz_config}


def main() -> None:
    """`python -m tests.faults.fuzz_atheris TARGET [libFuzzer options]`."""
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.faults.fuzz_atheris {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
