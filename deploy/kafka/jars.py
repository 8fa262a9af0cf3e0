"""Fetch the pinned Apache Kafka broker jars from Maven Central, once, into a user cache directory.

The broker is ``org.apache.kafka:kafka_2.13`` plus its runtime closure, copied by Maven's
``dependency:copy-dependencies`` from a tiny ``pom``-packaging project generated here. Two log4j
bridges that Kafka's scripts ship but its POM does not declare are added (see KAFKA.md).

Once a cache is complete a ``manifest.json`` (jar names, sizes, SHA-256) marks it; later runs check
the manifest against the files and never start Maven, so they do not touch the network.

Standard library only (see :mod:`deploy.kafka.preflight`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from deploy.kafka.preflight import find_java, find_mvn
from intelbus.errors import ToolMissingError

KAFKA_VERSION = "4.1.1"
SCALA_BINARY = "2.13"
# The log4j version Kafka 4.1.1 itself builds against; the bridges must match it.
LOG4J_VERSION = "2.24.3"
_MANIFEST = "manifest.json"
_MVN_TIMEOUT_S = 900

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>org.intelbus.local</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-1.2-api</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


class JarFetchError(ToolMissingError):
    """Maven could not fetch the broker jars. The message carries the tail of Maven's output."""


def cache_root() -> Path:
    """``$INTELBUS_CACHE_DIR`` or ``$XDG_CACHE_HOME/intelbus`` or ``~/.cache/intelbus``."""
    explicit = os.environ.get("INTELBUS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "intelbus"


def libs_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of ``version`` live once fetched."""
    return cache_root() / "kafka" / version / "libs"


def is_cached(version: str = KAFKA_VERSION) -> bool:
    """True when the manifest exists and every jar it lists is present with the recorded size."""
    libs = libs_dir(version)
    manifest = libs.parent / _MANIFEST
    if not manifest.is_file():
        return False
    try:
        entries = json.loads(manifest.read_text())["jars"]
    except (ValueError, KeyError, OSError):
        return False
    return all(
        (libs / e["name"]).is_file() and (libs / e["name"]).stat().st_size == e["size"]
        for e in entries
    ) and any(e["name"].startswith(f"kafka_{SCALA_BINARY}-") for e in entries)


def ensure_jars(version: str = KAFKA_VERSION, *, log: bool = True) -> Path:
    """Return the directory of broker jars, fetching them with Maven first if not cached.

    Raises:
        ToolMissingError: java or mvn is missing (only when a fetch is needed).
        JarFetchError: Maven failed.
    """
    libs = libs_dir(version)
    if is_cached(version):
        return libs
    find_java()  # Maven needs a JDK too; fail with our message rather than Maven's.
    mvn = find_mvn()
    if mvn is None:
        raise ToolMissingError(
            "No `mvn` on PATH to fetch the Kafka broker jars "
            "(Debian/Ubuntu: `apt-get install maven`), "
            "or set KAFKA_BOOTSTRAP_SERVERS to use an existing cluster."
        )
    root = libs.parent
    root.mkdir(parents=True, exist_ok=True)
    if log:
        print(f"intelbus: fetching Apache Kafka {version} jars with Maven into {libs} (once)")  # noqa: T201
    with tempfile.TemporaryDirectory(prefix="kafka-jars-", dir=root) as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "pom.xml").write_text(
            _POM.format(scala=SCALA_BINARY, kafka=version, log4j=LOG4J_VERSION)
        )
        staging = tmp_path / "libs"
        cmd = [
            str(mvn),
            "-B",
            "-q",
            f"-Dmaven.repo.local={cache_root() / 'm2'}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        try:
            res = subprocess.run(
                cmd,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=_MVN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise JarFetchError(f"Maven did not finish within {_MVN_TIMEOUT_S}s") from e
        if res.returncode != 0 or not staging.is_dir():
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
            raise JarFetchError(
                f"Maven failed (exit {res.returncode}) fetching Kafka {version}:\n{tail}"
            )
        jars = sorted(p for p in staging.iterdir() if p.suffix == ".jar")
        manifest = {
            "kafka_version": version,
            "log4j_version": LOG4J_VERSION,
            "jars": [
                {"name": p.name, "size": p.stat().st_size, "sha256": _sha256(p)} for p in jars
            ],
        }
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
        # The manifest is written last: its presence means the cache is complete.
        tmp_manifest = root / f"{_MANIFEST}.tmp"
        tmp_manifest.write_text(json.dumps(manifest, indent=2))
        tmp_manifest.replace(root / _MANIFEST)
    return libs


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    """CLI: ``python -m deploy.kafka.jars`` fetches (or confirms) the cached jars."""
    try:
        libs = ensure_jars()
    except ToolMissingError as e:
        print(f"error: {e}")  # noqa: T201
        return 3
    print(f"kafka {KAFKA_VERSION} jars: {libs}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
