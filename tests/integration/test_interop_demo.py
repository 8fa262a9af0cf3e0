"""Every export of the demo's stores, checked with the standards' own tools.

``intelbus demo`` runs as a user runs it (a separate process, on the session's real broker); then
each force's store is exported as a STIX 2.1 bundle, which must pass the OASIS validator in strict
mode with no error and no warning and load with ``stix2.parse(allow_custom=False)``, and as MISP
events, which must each load with PyMISP.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import stix2
from pymisp import MISPEvent
from stix2validator import ValidationOptions, validate_instance

from intelbus.cli import demo_cmd
from tests.walkthrough.workspace import environment

pytestmark = pytest.mark.kafka

ANALYST = ("--user", "analyst.demo", "--justification", "interop test", "--to", "interop test")


def _intelbus(cwd: Path, bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = environment(bootstrap)
    return subprocess.run(
        [str(Path(env["PATH"].split(":", 1)[0]) / "intelbus"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_workspace(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("interop-demo")
    done = _intelbus(root, bootstrap, "demo", "--workspace", "ws", "--records", "40")
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "ws"


def _export(ws: Path, bootstrap: str, force: str, fmt: str) -> Path:
    out = ws / f"{force}.{fmt}.json"
    done = _intelbus(
        ws, bootstrap, "store", "export", "--config", f"{force}.toml", "--format", fmt,
        "--out", str(out), *ANALYST,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.mark.parametrize("force", demo_cmd.FORCES)
def test_every_demo_store_exports_strict_stix(
    demo_workspace: Path, bootstrap: str, force: str
) -> None:
    bundle = json.loads(_export(demo_workspace, bootstrap, force, "stix").read_text())
    types = {o["type"] for o in bundle["objects"]}
    # Every demo store holds records (sightings, incidents or both, as each force's policy keeps).
    assert types & {"sighting", "incident"}, types
    result = validate_instance(bundle, ValidationOptions(strict=True, version="2.1"))
    problems = [str(e) for e in result.errors] + [str(w) for w in result.warnings]
    assert problems == []
    assert result.is_valid
    parsed = stix2.parse(bundle, allow_custom=False)
    assert len(parsed.objects) == len(bundle["objects"])
    assert "[REDACTED]" not in json.dumps(bundle)


@pytest.mark.parametrize("force", demo_cmd.FORCES)
def test_every_demo_store_exports_misp_events_pymisp_loads(
    demo_workspace: Path, bootstrap: str, force: str
) -> None:
    doc = json.loads(_export(demo_workspace, bootstrap, force, "misp").read_text())
    # MISP's own export and import shape: {"response": [{"Event": ...}, ...]}.
    events = doc["response"]
    assert events
    for raw in events:
        event = MISPEvent()
        event.load(raw)
        assert event.uuid
        assert event.info
        assert any(t.name.startswith("tlp:") for t in event.tags)
    assert "[REDACTED]" not in json.dumps(doc)
