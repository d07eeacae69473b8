"""Fuzzing with hypothesis: no input makes a decoder, the ingest path or the config loader raise anything but the
bridge's own error types (`mqtt_bridge.errors`). Every decoder in the registry is covered, whatever it holds."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqtt_bridge.config.load import load_config, parse_config
from mqtt_bridge.decode.base import Message
from mqtt_bridge.decode.registry import DECODERS, build_decoder
from mqtt_bridge.decode.sparkplug_schema import encode_payload
from mqtt_bridge.errors import ConfigError, DecodeError
from mqtt_bridge.routing.router import Router
from mqtt_bridge.transform.ingest import Ingestor
from tests.faults import fuzzing
from tests.helpers import is_ci

_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))  # --soak sets 3000 (tests/faults/conftest.py)
_FUZZ = settings(max_examples=_EXAMPLES, deadline=None, database=None, derandomize=is_ci(),
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("name", DECODERS)
@_FUZZ
@given(messages=fuzzing.message_sequences())
def test_decoder_raises_only_decode_errors(name: str, messages: list[tuple[str, bytes]]) -> None:
    """Any sequence of topics and payloads: a decoder returns events or raises DecodeError, nothing else."""
    decoder = build_decoder(name, fuzzing.route_model(name))
    for topic, payload in messages:
        with contextlib.suppress(DecodeError):
            decoder.decode(Message(topic, payload, time.time()))


@pytest.mark.parametrize("name", DECODERS)
@_FUZZ
@given(document=fuzzing.json_documents)
def test_decoder_raises_only_decode_errors_for_any_json(name: str, document: object) -> None:
    """Any JSON document under the topics the formats expect: events or DecodeError."""
    decoder = build_decoder(name, fuzzing.route_model(name))
    for topic in ("factory/line1/cam1/detections", "frigate/events", "spBv1.0/plant/DDATA/edge1/cam1"):
        with contextlib.suppress(DecodeError):
            decoder.decode(Message(topic, orjson.dumps(document), time.time()))


_INGESTORS = {name: Ingestor(Router([fuzzing.route_model(name)]), 64 * 1024) for name in DECODERS}
_topic_bytes = fuzzing.topics.map(str.encode) | st.binary(max_size=40)


def _ingest(name: str, topic: bytes, payload: bytes) -> str | None:
    """Process one message; check what a commit needs. Returns the dead letter's reason, None for records."""
    result = _INGESTORS[name].process(topic, payload, time.time())
    for record in result.records:
        record.to_bytes()  # what the intake commits must serialise, or the intake would retry it forever
    if result.dead_letter is None:
        return None
    assert result.records == []
    result.dead_letter.to_bytes()
    return result.dead_letter.reason


@pytest.mark.parametrize("name", DECODERS)
@_FUZZ
@given(messages=st.lists(st.tuples(_topic_bytes, fuzzing.payloads | st.binary(max_size=70_000)), max_size=4))
def test_ingestor_process_never_raises_nor_fails_internally(name: str, messages: list[tuple[bytes, bytes]]) -> None:
    """Any topic and payload bytes: committable records or a dead letter, never an `internal_error` one."""
    # internal_error is what any exception other than DecodeError inside a decoder or a rule becomes
    for topic, payload in messages:
        assert _ingest(name, topic, payload) != "internal_error"


_DDATA = "spBv1.0/plant/DDATA/edge1/cam1"
_GOOD_METRICS = encode_payload({"metrics": [
    {"name": "Inspection/Serial", "datatype": 12, "string_value": "ABCD"},
    {"name": "Inspection/Boxes", "datatype": 16, "dataset_value": {
        "num_of_columns": 1, "columns": ["WXYZ"], "types": [12], "rows": [{"elements": [{"string_value": "s"}]}]}},
]})


@pytest.mark.parametrize(("name", "topic", "payload", "reason"), [
    # found by atheris: a metric name that is not UTF-8 came back from protobuf as bytes (TypeError downstream)
    ("sparkplug", _DDATA, b"8888\x92\x00\x10PPPP\x10\x10\x10\x10\n\x02\xff88888\x92\x00\x10PPPP\x10\x10\x10\x10\n"
                          b"\x00\x10\x10\x10P\x10\x10\x10\x10\x10\x10", "invalid_message"),
    ("sparkplug", _DDATA, b"\x12\x10B\x00`\x00\x12\x00\n\x00P\x00\x12\x00\x12\x00\x12\x00\x12\x10B\x00`\x00\x12\x00"
                          b"\n\x04\xb0\x00\x12\x00\x12\x00\x12\x00", "invalid_message"),
    ("sparkplug", _DDATA, _GOOD_METRICS.replace(b"Serial", b"Ser\xffal"), "invalid_message"),
    ("sparkplug", _DDATA, _GOOD_METRICS.replace(b"WXYZ", b"\xff\xfe\xfd\xfc"), "invalid_message"),  # a guard
])
def test_ingestor_dead_letters_what_fuzzing_found(name: str, topic: str, payload: bytes, reason: str) -> None:
    """Inputs the fuzzers found: each becomes a dead letter with a proper reason, not an internal error."""
    assert _ingest(name, topic.encode(), payload) == reason


def _load_text(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        config = load_config(path, env={"HOME": "/root", "EMPTY": ""})
        Router(list(config.routes))  # as `check-config` and `run` do: template errors are config errors too
    except ConfigError:
        pass


@_FUZZ
@given(data=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_config_loader_raises_only_config_errors_for_any_bytes(tmp_path: Path, data: bytes) -> None:
    """Any file content: a config or ConfigError."""
    _load_text(tmp_path, data)


@_FUZZ
@given(document=fuzzing.config_documents)
def test_config_loader_raises_only_config_errors_for_any_yaml_document(tmp_path: Path, document: object) -> None:
    """Any YAML document built from the config's own keys: a config or ConfigError."""
    _load_text(tmp_path, yaml.safe_dump(document, allow_unicode=True).encode())


@_FUZZ
@given(section=st.sampled_from(("mqtt", "api", "buffer", "flush", "health", "logging", "routes")),
       key=st.sampled_from(("", *fuzzing.CONFIG_KEYS)), value=fuzzing.config_documents)
def test_config_parser_raises_only_config_errors_for_one_bad_value(section: str, key: str, value: object) -> None:
    """A valid config with one value replaced by anything: a config or ConfigError."""
    raw = fuzzing.mutated(fuzzing.valid_base_config(), section, key, value)
    try:
        config = parse_config(raw, env={})
        Router(list(config.routes))
    except ConfigError:
        pass


@pytest.mark.parametrize(("name", "data"), [
    ("non-UTF-8 file", b"mqtt:\n  host: \xff\xfe\n"),
    ("recursive alias", b"api: {api_key: k}\nroutes: &r [*r]\n"),
    ("nesting deeper than the parser", b"[" * 5000 + b"]" * 5000),
    ("size beyond float range", b"api: {api_key: k}\nbuffer: {max_bytes: '" + b"9" * 400 + b"'}\n"
                                b"routes: [{topic: a, use_case: u}]\n"),
])
def test_config_loader_rejects_what_fuzzing_found(tmp_path: Path, name: str, data: bytes) -> None:
    """Inputs the fuzzers found: each is a ConfigError with a message, not a crash."""
    path = tmp_path / "found.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    assert raised.value.problems and all(message for _, message in raised.value.problems)
