"""Find the tools a local Kafka needs, and say exactly what is missing when they are not there.

Standard library only, so the README commands can run it before any virtual environment exists
(``python3 -m deploy.kafka.preflight``) and fail within a second with an actionable message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Standard library only (above), plus the error hierarchy, which imports nothing but enum.
from intelbus.errors import ToolMissingError

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
JAVA_MIN_MAJOR = 17

INSTALL_HINT = (
    "Install Java 17+ and Maven (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless maven`), "
    "or start a Docker engine (testcontainers is then used), "
    f"or point {BOOTSTRAP_ENV} at an existing Kafka cluster (host:port[,host:port])."
)


@dataclass(frozen=True, slots=True)
class JavaTools:
    """Paths to a working ``java`` (17+) and ``mvn``."""

    java: Path
    mvn: Path | None
    java_major: int


def find_java() -> tuple[Path, int]:
    """Locate ``java`` (``$JAVA_HOME/bin/java`` when JAVA_HOME is set, else PATH) and check its version.

    Raises:
        ToolMissingError: java is absent, JAVA_HOME points nowhere, or the version is below 17.
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            raise ToolMissingError(
                f"JAVA_HOME={java_home} has no executable bin/java. "
                f"Unset JAVA_HOME or point it at a JDK 17+. {INSTALL_HINT}"
            )
        java = candidate
    else:
        found = shutil.which("java")
        if found is None:
            raise ToolMissingError(f"No `java` on PATH. {INSTALL_HINT}")
        java = Path(found)
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolMissingError(
            f"`{java} -version` failed ({type(e).__name__}). {INSTALL_HINT}"
        ) from e
    major = _parse_java_major(out.stderr + out.stdout)
    if major is None or out.returncode != 0:
        raise ToolMissingError(f"`{java} -version` did not report a version. {INSTALL_HINT}")
    if major < JAVA_MIN_MAJOR:
        raise ToolMissingError(
            f"{java} is Java {major}; Kafka 4.x needs Java {JAVA_MIN_MAJOR}+. {INSTALL_HINT}"
        )
    return java, major


def _parse_java_major(text: str) -> int | None:
    # `java -version` prints e.g. 'openjdk version "17.0.15" 2025-04-15' (or "1.8.0_402" for 8).
    for line in text.splitlines():
        if "version" in line and '"' in line:
            ver = line.split('"')[1]
            head = ver.split(".")[0]
            if head == "1" and "." in ver:
                head = ver.split(".")[1]
            return int(head) if head.isdigit() else None
    return None


def find_mvn() -> Path | None:
    """``mvn`` on PATH, or None."""
    found = shutil.which("mvn")
    return Path(found) if found else None


def docker_available(timeout: float = 3.0) -> bool:
    """True when a Docker engine answers (not merely when the client is installed)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        res = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and bool(res.stdout.strip())


def check(*, need_mvn: bool = True) -> str:
    """Decide how Kafka will be provided and return a one-word answer: cluster, jars or docker.

    Raises:
        ToolMissingError: none of a configured cluster, Java+Maven, or Docker is available.
    """
    if os.environ.get(BOOTSTRAP_ENV, "").strip():
        return "cluster"
    java_problem: str | None = None
    try:
        find_java()
    except ToolMissingError as e:
        java_problem = str(e)
    if java_problem is None and (find_mvn() is not None or not need_mvn):
        return "jars"
    if docker_available():
        return "docker"
    if java_problem is not None:
        raise ToolMissingError(f"Cannot run Kafka: {java_problem}")
    raise ToolMissingError(
        f"Cannot run Kafka: no `mvn` on PATH to fetch the broker jars. {INSTALL_HINT}"
    )


def main() -> int:
    """CLI: print how Kafka will be provided, or what is missing (exit 3)."""
    try:
        how = check()
    except ToolMissingError as e:
        sys.stderr.write(f"error: {e}\n")
        return 3
    sys.stdout.write(f"kafka provider: {how}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
