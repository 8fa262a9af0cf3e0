"""Running the README's "Getting started on a real bus" as a new user would: its shell blocks,
line by line, in an empty folder, on a real broker, with nothing of the demo's workspace.

The blocks between ``<!-- walkthrough:start -->`` and ``<!-- walkthrough:end -->`` are joined into
one script run by ``bash -e -x`` (so the first failing line stops it, and the trace names it), with
the installed ``intelbus`` command on ``PATH``. Two substitutions only: the broker the test
session provides for the README's example address, and a fresh topic prefix for ``mybus`` (several
runs share one broker).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
EXAMPLE_BOOTSTRAP = "127.0.0.1:9092"


def readme_blocks() -> list[str]:
    """The README walkthrough's shell blocks, in order."""
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- walkthrough:start -->(.*?)<!-- walkthrough:end -->", text, re.DOTALL)
    if found is None:
        raise AssertionError("README.md has no walkthrough section")
    blocks = re.findall(r"```bash\n(.*?)```", found.group(1), re.DOTALL)
    if not blocks:
        raise AssertionError("the README walkthrough has no ```bash blocks")
    return blocks


def environment(bootstrap: str) -> dict[str, str]:
    """A user's environment: the installed command first on PATH, the broker, no test leftovers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTELBUS_", "PYTEST", "COV_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "100"
    return env


@dataclass(frozen=True)
class Walked:
    """The folder the README was run in, what it printed, and the prefix it used."""

    root: Path
    prefix: str
    bootstrap: str
    output: str

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """One more ``intelbus`` command in the same folder, as the same user."""
        return subprocess.run(
            [str(Path(sys.executable).parent / "intelbus"), *args],
            cwd=self.root,
            env=environment(self.bootstrap),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )


def walk(root: Path, bootstrap: str) -> Walked:
    """Run the README walkthrough in ``root``; raises AssertionError naming the failing line."""
    prefix = f"walk{uuid.uuid4().hex[:8]}"
    script = "\n".join(readme_blocks())
    script = script.replace(EXAMPLE_BOOTSTRAP, bootstrap).replace("mybus", prefix)
    root.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-e", "-x", "-o", "pipefail", "-c", script],
        cwd=root,
        env=environment(bootstrap),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        traced = [line for line in done.stderr.splitlines() if line.startswith("+ ")]
        last = traced[-1] if traced else "(no line ran)"
        raise AssertionError(
            f"the README walkthrough stopped (exit {done.returncode}) at: {last}\n{output[-3000:]}"
        )
    return Walked(root, prefix, bootstrap, output)
