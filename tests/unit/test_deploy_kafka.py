"""Unit tests of the local-Kafka tooling that need no broker: preflight, cache, state, config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from deploy.kafka import jars, preflight
from deploy.kafka.launcher import ClusterState, LocalKafka, NodeState, free_ports, new_cluster_id

REPO = Path(__file__).resolve().parents[2]


def test_java_home_pointing_nowhere_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad JAVA_HOME is reported as such, with what to install, not as a Java traceback."""
    monkeypatch.setenv("JAVA_HOME", "/nonexistent/jdk")
    with pytest.raises(preflight.ToolMissingError) as info:
        preflight.find_java()
    assert "JAVA_HOME=/nonexistent/jdk" in str(info.value)
    assert "apt-get install" in str(info.value)


def test_preflight_command_fails_fast_without_java_docker_or_cluster(tmp_path: Path) -> None:
    """`python -m deploy.kafka.preflight` exits 3 within seconds and says what is missing."""
    env = {
        "PATH": str(tmp_path),  # no java, no mvn, no docker on this PATH
        "JAVA_HOME": str(tmp_path / "nowhere"),
        "HOME": str(tmp_path),
    }
    res = subprocess.run(
        [sys.executable, "-m", "deploy.kafka.preflight"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert res.returncode == 3
    assert "JAVA_HOME=" in res.stderr
    assert "KAFKA_BOOTSTRAP_SERVERS" in res.stderr
    assert "Traceback" not in res.stderr


def test_configured_cluster_wins_over_local_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """KAFKA_BOOTSTRAP_SERVERS means: use that cluster, start nothing."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "10.9.9.9:9092")
    monkeypatch.setenv("JAVA_HOME", "/nonexistent")
    assert preflight.check() == "cluster"


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_402"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("garbage", None),
    ],
)
def test_java_version_parsing(text: str, major: int | None) -> None:
    """Both the modern and the 1.x version formats are understood."""
    assert preflight._parse_java_major(text) == major


def test_jar_cache_needs_a_complete_manifest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A cache counts only when its manifest lists the broker jar and every file has its size."""
    monkeypatch.setenv("INTELBUS_CACHE_DIR", str(tmp_path))
    libs = jars.libs_dir()
    assert not jars.is_cached()
    libs.mkdir(parents=True)
    broker = libs / f"kafka_{jars.SCALA_BINARY}-{jars.KAFKA_VERSION}.jar"
    broker.write_bytes(b"x" * 10)
    manifest = {"jars": [{"name": broker.name, "size": 10, "sha256": ""}]}
    (libs.parent / "manifest.json").write_text(json.dumps(manifest))
    assert jars.is_cached()
    broker.write_bytes(b"x" * 9)  # truncated jar: the cache is not trusted
    assert not jars.is_cached()


def test_cached_jars_never_start_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With a complete cache, ensure_jars returns at once even when Maven and Java are absent."""
    monkeypatch.setenv("INTELBUS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("JAVA_HOME", "/nonexistent")
    libs = jars.libs_dir()
    libs.mkdir(parents=True)
    broker = libs / f"kafka_{jars.SCALA_BINARY}-{jars.KAFKA_VERSION}.jar"
    broker.write_bytes(b"jar")
    (libs.parent / "manifest.json").write_text(
        json.dumps({"jars": [{"name": broker.name, "size": 3, "sha256": ""}]})
    )
    assert jars.ensure_jars(log=False) == libs


def test_missing_maven_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No cache and no mvn: the error says how to install Maven."""
    monkeypatch.setenv("INTELBUS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(preflight, "find_java", lambda: (Path("/usr/bin/java"), 17))
    monkeypatch.setattr(jars, "find_java", lambda: (Path("/usr/bin/java"), 17))
    monkeypatch.setattr(jars, "find_mvn", lambda: None)
    with pytest.raises(preflight.ToolMissingError, match="apt-get install maven"):
        jars.ensure_jars(log=False)


def test_free_ports_are_distinct() -> None:
    """Ports handed out together never repeat."""
    ports = free_ports(20)
    assert len(set(ports)) == 20


def test_cluster_id_is_kafka_shaped() -> None:
    """22 characters of URL-safe base64: what Kafka's own random-uuid prints."""
    cid = new_cluster_id()
    assert len(cid) == 22
    assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-storage reads "-..." as an option: such ids are drawn again, as Kafka itself does."""
    dash = uuid.UUID(bytes=b"\xfb" + bytes(15))  # base64 "-wAAAAAAAAAAAAAAAAAAAA"
    plain = uuid.UUID(int=1)
    draws = iter([dash, dash, plain])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    assert new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAQ"


def test_cluster_state_round_trips_through_json() -> None:
    """cluster.json carries everything `status` and `down` need in another process."""
    state = ClusterState(
        "abc", "4.1.1", [NodeState(1, 1000, 1001, pid=42), NodeState(2, 1002, 1003)]
    )
    back = ClusterState.from_json(state.to_json())
    assert back == state
    assert back.bootstrap_servers == "127.0.0.1:1000,127.0.0.1:1002"


def test_three_node_properties_follow_the_durability_settings(tmp_path: Path) -> None:
    """N>1 nodes share a static voter set and use RF 3, min ISR 2, no unclean election."""
    lk = LocalKafka(tmp_path, nodes=3)
    lk.state = ClusterState(
        "cid", "4.1.1", [NodeState(i, 2000 + 2 * i, 2001 + 2 * i) for i in (1, 2, 3)]
    )
    props = lk._properties(lk.state.nodes[1])
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:2003,2@127.0.0.1:2005,3@127.0.0.1:2007"
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["unclean.leader.election.enable"] == "false"
    assert props["auto.create.topics.enable"] == "false"
    assert "controller.quorum.bootstrap.servers" not in props


def test_single_node_properties_bootstrap_the_quorum(tmp_path: Path) -> None:
    """One node is its own controller quorum, formatted --standalone."""
    lk = LocalKafka(tmp_path, nodes=1)
    lk.state = ClusterState("cid", "4.1.1", [NodeState(1, 3000, 3001)])
    props = lk._properties(lk.state.nodes[0])
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:3001"
    assert props["process.roles"] == "broker,controller"
    assert props["offsets.topic.replication.factor"] == "1"


def test_no_kafka_means_a_failed_fixture_not_a_skip(tmp_path: Path) -> None:
    """With no broker possible and no opt-out, a Kafka test fails with the reason; it never skips."""
    test_file = tmp_path / "test_needs_kafka.py"
    test_file.write_text("def test_x(bootstrap):\n    assert bootstrap\n")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{tmp_path / 'empty'}",
        "JAVA_HOME": str(tmp_path / "nowhere"),
        "CI": "",
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("INTELBUS_SKIP_KAFKA_TESTS", None)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "--rootdir",
            str(tmp_path),
            "-q",
            str(test_file),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "1 error" in out or "1 failed" in out, out
    assert "no Kafka broker could be started" in out, out
    assert "JAVA_HOME=" in out, out
