"""The launcher itself, on real brokers: the CLI's up/status/down, and a 3-node cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from deploy.kafka.launcher import LocalKafka
from deploy.kafka.provider import ProvidedKafka
from intelbus.transport import kafka as transport
from intelbus.transport.topics import TopicSpec, audit_topic_config


def _intelbus(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "intelbus.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _java_pids_under(path: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "kafka.Kafka" in cmdline and str(path) in cmdline:
            pids.append(int(proc.name))
    return pids


def test_cli_up_status_down_leaves_no_java_behind(tmp_path: Path, kafka: ProvidedKafka) -> None:
    """`intelbus kafka up` starts a live broker, `status` sees it, `down` stops every JVM."""
    if kafka.provider != "jars":
        pytest.fail(f"this test needs the jar launcher; the session uses {kafka.provider}")
    env = {**os.environ, "INTELBUS_STATE_DIR": str(tmp_path)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    try:
        up = _intelbus("kafka", "up", env=env)
        assert up.returncode == 0, up.stderr
        assert "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:" in up.stdout
        assert _java_pids_under(tmp_path)

        status = _intelbus("kafka", "status", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "running" in status.stdout
        assert "yes" in status.stdout
    finally:
        down = _intelbus("kafka", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert _java_pids_under(tmp_path) == []
    after = _intelbus("kafka", "status", env=env)
    assert after.returncode == 1
    assert "stopped" in after.stdout


def test_three_node_cluster_keeps_acknowledged_records_when_a_broker_is_killed(
    tmp_path: Path, kafka: ProvidedKafka
) -> None:
    """RF 3, min ISR 2, acks=all: kill -9 one broker mid-stream; every acknowledged record is read."""
    if kafka.provider != "jars":
        pytest.fail(f"this test needs the jar launcher; the session uses {kafka.provider}")
    topic = f"it-3n-{uuid.uuid4().hex[:8]}"
    with LocalKafka(tmp_path, nodes=3, heap_mb=256) as cluster:
        bootstrap = cluster.bootstrap_servers
        transport.create_topics(
            bootstrap, [TopicSpec(topic, 3, 3, audit_topic_config(min_insync_replicas=2))]
        )
        replicas = transport.topic_partitions(bootstrap, topic)
        assert len(replicas) == 3
        assert all(len(r) == 3 for r in replicas.values())
        acked: list[bytes] = []
        producer = transport.make_producer(bootstrap)
        try:
            for i in range(300):
                value = f"record-{i}".encode()
                if i == 100:
                    cluster.stop_node(2, sig=signal.SIGKILL)
                producer.send(topic, value=value, key=str(i % 7).encode()).get(timeout=60)
                acked.append(value)
        finally:
            producer.close()
        assert cluster.running_nodes() == [1, 3]

        consumer = transport.make_consumer(
            bootstrap, topic, group_id=None, consumer_timeout_ms=15_000
        )
        try:
            seen = [m.value for m in consumer]
        finally:
            consumer.close()
    assert sorted(seen) == sorted(acked)
