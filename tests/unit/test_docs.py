"""The documentation in layers: a short front page, and every command, flag, config key and metric documented
somewhere, with links that stay inside the repository (or go to public docs)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from mqtt_bridge.cli.main import _parser
from mqtt_bridge.config.explain import key_docs
from mqtt_bridge.observe.metrics import COUNTERS, GAUGES, PREFIX, BufferGauges, Metrics
from mqtt_bridge.observe.stats import Stats

REPO = Path(__file__).resolve().parents[2]
FRONT_PAGE = REPO / "README.md"
CONFIG_DOC = REPO / "config" / "README.md"
DEPLOY_DOC = REPO / "deploy" / "README.md"
# the front page, the two references, and the further pages under deploy/ (operations, guarantees, architecture)
DOCS = sorted({FRONT_PAGE, CONFIG_DOC, DEPLOY_DOC, *REPO.glob("config/*.md"), *REPO.glob("deploy/*.md")})
FRONT_PAGE_MAX_BYTES = 15_500
# absolute links may only go to public documentation (and the demo's own pages on this machine)
DOC_HOSTS = {"docs.roboflow.com", "mqtt.org", "docs.python.org", "prometheus.io", "mosquitto.org", "kubernetes.io",
             "docs.docker.com", "grafana.com", "systemd.io", "www.freedesktop.org", "docs.pydantic.dev",
             "eclipse.github.io", "docs.oasis-open.org"}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)|<(https?://[^>\s]+)>")
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def _all_docs_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in DOCS)


def _links(path: Path) -> list[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))  # code blocks hold no links
    return [match.group(1) or match.group(2) for match in _LINK.finditer(text)]


def _anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes for a Markdown file (lower case, punctuation dropped, spaces to -)."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        anchors.add(slug)
    return anchors


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _exported_metrics() -> set[str]:
    """Every metric name a bridge's /metrics exports (counters with their `_total`), without the prefix."""

    class _State:
        is_ready = mqtt_connected = api_ready = buffer_writable = True
        buffer_depth = dead_letters = 0

    # as in the worker process: the receiver's and the supervisor's process metrics too (here, this process's)
    metrics = Metrics(Stats(), _State, lambda: BufferGauges(bytes=0, oldest_age_s=0.0),
                      other_processes={"receiver": os.getpid, "supervisor": os.getpid})
    names = {family.name + ("_total" if family.type == "counter" else "") for family in metrics.registry.collect()}
    names |= {PREFIX + name + "_total" for name in COUNTERS}
    names |= {PREFIX + exported for exported, _ in GAUGES.values()}
    names.add(PREFIX + "api_request_seconds")  # a histogram, exported once the first request is timed
    return {name.removeprefix(PREFIX) for name in names}


def test_docs_front_page_is_at_most_15_5_kb() -> None:
    """README.md is the front page: at most 15,500 bytes; the reference lives in config/ and deploy/."""
    size = len(FRONT_PAGE.read_bytes())
    assert size <= FRONT_PAGE_MAX_BYTES, f"README.md is {size} bytes; move detail to config/README.md or deploy/"


def test_docs_front_page_gives_the_two_commands_and_the_test_command_ci_runs() -> None:
    """The front page gives `make demo` and `make test`, and the test command is the one .ci/run runs."""
    text = FRONT_PAGE.read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ci_commands = [line.strip() for line in ci.splitlines() if line.strip().startswith("make ")]
    assert ci_commands == ["make test"], ci_commands
    shell = "\n".join(re.findall(r"^```sh\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE))
    assert re.search(r"^make demo\b", shell, flags=re.MULTILINE)
    assert re.search(r"^make test\b", shell, flags=re.MULTILINE)
    for heading in ("## Try it, test it", "## Run it in a plant", "## What it guarantees", "## Where to read more",
                    "## Development"):
        assert heading in text


@pytest.mark.parametrize("command", sorted(_commands()))
def test_docs_every_command_and_flag_is_documented(command: str) -> None:
    """Each `mqtt-bridge` command, each of its long flags and each of its actions appears in the docs."""
    text = _all_docs_text()
    parser = _commands()[command]
    assert f"mqtt-bridge {command}" in text or f"`{command}`" in text, f"command {command} is not documented"
    missing = []
    for action in parser._actions:
        missing += [flag for flag in action.option_strings
                    if flag.startswith("--") and flag != "--help" and not re.search(re.escape(flag) + r"(?![\w-])",
                                                                                     text)]
        if not action.option_strings and action.choices:
            missing += [str(c) for c in action.choices if not re.search(rf"\b{re.escape(str(c))}\b", text)]
    assert not missing, f"mqtt-bridge {command}: {missing} not in the docs"


def test_docs_every_config_key_is_in_the_reference_config_and_explained() -> None:
    """Every config key is in config/reference.yaml ("every key"), and `--explain` has a description for it."""
    reference = (REPO / "config" / "reference.yaml").read_text(encoding="utf-8")
    not_in_reference, undescribed = [], []
    for path, doc in key_docs().items():
        name = path.rsplit(".", 1)[-1]
        if name != "*" and not re.search(rf"(?<![\w.]){re.escape(name)}:", reference):
            not_in_reference.append(path)
        if not doc.description:
            undescribed.append(path)
    assert not not_in_reference, f"keys missing from config/reference.yaml: {not_in_reference}"
    assert not undescribed, f"keys without a description for --explain: {undescribed}"


def test_docs_config_reference_covers_every_section_and_route_key() -> None:
    """config/README.md names every section, every route key and every image key, and explains --explain."""
    text = CONFIG_DOC.read_text(encoding="utf-8")
    keys = [path for path in key_docs()
            if path.count(".") == 0 or re.fullmatch(r"routes\[\]\.(image\.)?\w+", path)]
    names = {path: re.escape(path.rsplit(".", 1)[-1]) for path in keys}
    missing = [path for path, name in names.items() if not re.search(rf"[`.]{name}(?!\w)|(?<!\w){name}:", text)]
    assert not missing, f"not in config/README.md: {missing}"
    assert "check-config --explain" in text


def test_docs_every_exported_metric_is_in_the_deploy_reference() -> None:
    """Every metric the bridge exports is named in deploy/README.md (process metrics as `process_*`)."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    missing = sorted(name for name in _exported_metrics()
                     if f"`{name}`" not in text and not any(name.startswith(f"{process}process_")
                                                             and f"`{process}process_*`" in text
                                                             for process in ("", "receiver_", "supervisor_")))
    assert not missing, f"metrics not in deploy/README.md: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_docs_links_stay_in_the_repository_or_go_to_public_docs(doc: Path) -> None:
    """Each relative link resolves to a file (and heading) of the repository; each absolute one is public docs."""
    broken = []
    for link in _links(doc):
        parts = urlsplit(link)
        if parts.scheme in ("http", "https"):
            if parts.hostname not in DOC_HOSTS | LOCAL_HOSTS:
                broken.append(f"{link} (not a public-docs host)")
            continue
        if parts.scheme:
            broken.append(f"{link} (scheme {parts.scheme})")
            continue
        target = (doc.parent / unquote(parts.path)).resolve() if parts.path else doc
        if not target.is_relative_to(REPO) or not target.exists():
            broken.append(f"{link} (no such file)")
        elif parts.fragment and target.suffix == ".md" and parts.fragment not in _anchors(target):
            broken.append(f"{link} (no such heading in {target.relative_to(REPO)})")
    assert not broken, f"{doc.relative_to(REPO)}: {broken}"


def test_docs_anchor_slugs_follow_github() -> None:
    """The heading anchors used by the link check are GitHub's (so a link that passes here works there)."""
    page = REPO / "deploy" / "README.md"
    anchors = _anchors(page)
    assert "connecting-to-the-broker-what-the-bridge-says-when-it-cannot" in anchors
    assert "health-metrics-and-the-status-page" in anchors


def test_docs_fault_results_block_is_in_the_file_make_faults_writes() -> None:
    """`make faults` rewrites the results block of the file it names; that file is in the docs and has the markers."""
    # the suite's own marker strings, read from its source (importing a conftest from here would register it twice)
    suite = (REPO / "tests" / "faults" / "conftest.py").read_text(encoding="utf-8")
    begin, end = (re.findall(rf'^{name} = "(.+)"$', suite, flags=re.MULTILINE)[0] for name in ("RESULTS_BEGIN",
                                                                                                 "RESULTS_END"))
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    target = REPO / re.findall(r"--faults-results (\S+)", makefile)[0]
    assert target in DOCS
    text = target.read_text(encoding="utf-8")
    assert begin in text and end in text and text.index(begin) < text.index(end)
