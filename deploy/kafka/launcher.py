"""Start and stop 1..N real Apache Kafka KRaft nodes on free loopback ports, from the cached jars.

Each node is a combined broker+controller (``process.roles=broker,controller``). One node is
formatted ``--standalone``; N nodes share a static ``controller.quorum.voters`` list and the
durability settings of SECURITY.md (RF 3, min ISR 2, no unclean election).

Everything lives under one state directory::

    <state>/cluster.json          ports, pids, cluster id (read by `intelbus kafka status|down`)
    <state>/node-<id>/server.properties, log4j2.properties
    <state>/node-<id>/data/        the log.dirs
    <state>/node-<id>/logs/        server.log and the JVM's stdout/stderr

Ready means: every client port accepts a connection and a metadata request lists all N brokers.
Stop is SIGTERM, then SIGKILL after a grace period; no Java process is left behind.

Secured mode (``tls=BrokerTls(...)``): every listener, the controller's included, is SSL with
``ssl.client.auth=required``; the StandardAuthorizer denies what no ACL allows; ``super.users`` is
the brokers' own principal and the operator's (``User:broker;User:admin``); and the principal
mapping turns a certificate of the bus's CA into ``User:<agency id>`` (deploy/tls). Without
``tls`` the cluster is plaintext, exactly as before.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from deploy.kafka.jars import KAFKA_VERSION, ensure_jars
from deploy.kafka.preflight import find_java
from intelbus.errors import KafkaStartError, KafkaUnavailableError, ToolMissingError
from intelbus.log import get_logger
from intelbus.transport.kafka import broker_ids
from intelbus.transport.security import TransportSecurity

log = get_logger("deploy.kafka")

STATE_FILE = "cluster.json"
_PR_SET_PDEATHSIG = 1


STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """What a secured cluster needs: the brokers' PEM keystore (key + chain), the CA they trust,
    the principal mapping and super users, and the admin client settings used to check readiness.
    """

    keystore_file: Path
    truststore_file: Path
    admin: TransportSecurity
    principal_mapping_rules: str
    super_users: tuple[str, ...] = ("User:broker", "User:admin")

    def properties(self) -> dict[str, str]:
        """The broker properties shared by every listener (the controller listener included)."""
        return {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore_file),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.truststore_file),
            "ssl.client.auth": "required",
            "ssl.endpoint.identification.algorithm": "https",
            "ssl.principal.mapping.rules": self.principal_mapping_rules,
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "super.users": ";".join(self.super_users),
            "allow.everyone.if.no.acl.found": "false",
        }


@dataclass(slots=True)
class NodeState:
    """One node of a local cluster: its ports and, while running, its pid."""

    node_id: int
    client_port: int
    controller_port: int
    pid: int | None = None


@dataclass(slots=True)
class ClusterState:
    """What `cluster.json` holds: enough for another process to report on or stop the cluster."""

    cluster_id: str
    kafka_version: str
    nodes: list[NodeState] = field(default_factory=list)
    host: str = "127.0.0.1"

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{n.client_port}" for n in self.nodes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        raw = json.loads(text)
        return cls(
            cluster_id=raw["cluster_id"],
            kafka_version=raw["kafka_version"],
            host=raw.get("host", "127.0.0.1"),
            nodes=[NodeState(**n) for n in raw["nodes"]],
        )


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` right now (held open together so none repeats)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in Kafka's URL-safe base64 form without padding.

    One in 64 of those starts with "-", which kafka-storage's argument parser reads as an option
    ("--cluster-id: expected one argument": the demo failed so). Kafka's own Uuid.randomUuid()
    draws again in that case; so does this.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux only: SIGKILL the JVM if the process that started it dies (a killed pytest must not leave
    # brokers behind). Used for test brokers, not for `intelbus kafka up`.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LocalKafka:
    """A local Kafka cluster of ``nodes`` KRaft nodes under ``state_dir``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. :meth:`attach` rebuilds a
    handle from ``cluster.json`` in another process (the CLI's ``status`` and ``down``).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        nodes: int = 1,
        heap_mb: int = 384,
        tie_to_parent: bool = True,
        extra_properties: dict[str, str] | None = None,
        tls: BrokerTls | None = None,
        advertised_ports: dict[int, int] | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.state_dir = state_dir
        self.node_count = nodes
        self.heap_mb = heap_mb
        self.tie_to_parent = tie_to_parent
        self.extra_properties = dict(extra_properties or {})
        self.tls = tls
        # node id -> the client port to advertise instead of the node's own (a TCP proxy in front
        # of the broker, tests/faults/proxy.py); clients and replicas then connect through it.
        self.advertised_ports = dict(advertised_ports or {})
        self.state: ClusterState | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def attach(cls, state_dir: Path, *, tls: BrokerTls | None = None) -> LocalKafka:
        """A handle on a cluster described by ``state_dir/cluster.json`` (possibly not running).

        Raises:
            FileNotFoundError: there is no cluster state in ``state_dir``.
        """
        state = ClusterState.from_json((state_dir / STATE_FILE).read_text())
        lk = cls(state_dir, nodes=len(state.nodes), tie_to_parent=False, tls=tls)
        lk.state = state
        return lk

    @property
    def bootstrap_servers(self) -> str:
        if self.state is None:
            raise KafkaUnavailableError("the local cluster has not been started")
        return self.state.bootstrap_servers

    def start(self, timeout: float = 120.0) -> str:
        """Format (first time only) and start every node; wait until all brokers answer.

        Returns the bootstrap servers string.

        Raises:
            ToolMissingError: Java or Maven is missing.
            KafkaStartError: a node exited early or the cluster was not ready in time.
        """
        java, _ = find_java()
        libs = ensure_jars()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.state_dir / STATE_FILE
        if self.state is None and state_path.is_file():
            # Restart of a cluster formatted earlier: same id and ports (the controller quorum
            # remembers its endpoints), same data.
            self.state = ClusterState.from_json(state_path.read_text())
        if self.state is None:
            ports = free_ports(2 * self.node_count)
            self.state = ClusterState(
                cluster_id=new_cluster_id(),
                kafka_version=KAFKA_VERSION,
                nodes=[
                    NodeState(
                        node_id=i + 1, client_port=ports[2 * i], controller_port=ports[2 * i + 1]
                    )
                    for i in range(self.node_count)
                ],
            )
        for node in self.state.nodes:
            self._write_config(node)
            if not (self._node_dir(node) / "data" / "meta.properties").is_file():
                self._format(java, libs, node)
        for node in self.state.nodes:
            self._spawn(java, libs, node)
        self._save()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info(
            "kafka.ready",
            nodes=self.node_count,
            bootstrap=self.state.bootstrap_servers,
            version=KAFKA_VERSION,
        )
        return self.state.bootstrap_servers

    def wait_ready(self, timeout: float = 120.0, *, nodes: list[int] | None = None) -> None:
        """Block until the given nodes (default: all) are registered brokers answering metadata.

        Raises:
            KafkaStartError: a node process exited, or the deadline passed.
        """
        assert self.state is not None  # noqa: S101 - internal invariant, start() sets it
        wanted = {n.node_id for n in self.state.nodes} if nodes is None else set(nodes)
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for node in self.state.nodes:
                proc = self._procs.get(node.node_id)
                if node.node_id in wanted and proc is not None and proc.poll() is not None:
                    raise KafkaStartError(
                        f"kafka node {node.node_id} exited with code {proc.returncode} while "
                        f"starting; log tail:\n{self.log_tail(node.node_id)}"
                    )
            try:
                live = [n for n in self.state.nodes if n.node_id in wanted]
                seen = broker_ids(
                    ",".join(f"{self.state.host}:{n.client_port}" for n in live),
                    timeout_s=5.0,
                    security=self.tls.admin if self.tls is not None else None,
                )
                if wanted <= seen:
                    return
                last_error = f"brokers registered so far: {sorted(seen)}"
            except KafkaUnavailableError as e:
                last_error = str(e)
            time.sleep(0.25)
        tails = "\n".join(self.log_tail(n) for n in sorted(wanted))
        raise KafkaStartError(
            f"kafka not ready after {timeout:.0f}s ({last_error}); log tail:\n{tails}"
        )

    def stop(self, grace: float = 20.0) -> None:
        """Stop every node: SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent."""
        if self.state is None:
            return
        # Signal every node first, then wait: stopped one at a time, the last nodes of a
        # multi-node cluster lose their controller quorum and hang in controlled shutdown.
        running = [n for n in self.state.nodes if n.pid is not None]
        for node in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + grace
        for node in running:
            self.stop_node(node.node_id, grace=max(0.5, deadline - time.monotonic()))
        self._save()

    def stop_node(self, node_id: int, *, grace: float = 20.0, sig: int = signal.SIGTERM) -> None:
        """Stop one node with ``sig`` (SIGKILL for a crash); escalate to SIGKILL after ``grace``."""
        node = self._node(node_id)
        pid = node.pid
        if pid is None:
            return
        proc = self._procs.pop(node_id, None)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not _wait_pid(pid, proc, grace):
            log.warning("kafka.stop.escalate", node=node_id, grace_s=grace)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_pid(pid, proc, 10.0)
        node.pid = None
        self._save()

    def start_node(self, node_id: int, timeout: float = 120.0) -> None:
        """(Re)start one stopped node of a running cluster and wait until it is a live broker."""
        java, _ = find_java()
        libs = ensure_jars()
        node = self._node(node_id)
        if node.pid is not None and _alive(node.pid):
            return
        self._spawn(java, libs, node)
        self._save()
        self.wait_ready(timeout, nodes=[node_id])

    def signal_node(self, node_id: int, sig: int) -> None:
        """Send ``sig`` to one node (SIGSTOP/SIGCONT to pause and resume it)."""
        pid = self._node(node_id).pid
        if pid is None:
            raise KafkaUnavailableError(f"kafka node {node_id} is not running")
        os.kill(pid, sig)

    def running_nodes(self) -> list[int]:
        """Ids of nodes whose process is alive."""
        if self.state is None:
            return []
        return [n.node_id for n in self.state.nodes if n.pid is not None and _alive(n.pid)]

    def node_ports(self) -> dict[int, int]:
        """node id -> client port."""
        if self.state is None:
            return {}
        return {n.node_id: n.client_port for n in self.state.nodes}

    def log_tail(self, node_id: int, lines: int = 25) -> str:
        """The last lines of a node's server log and JVM output, for error messages."""
        node_dir = self._node_dir(self._node(node_id))
        out: list[str] = []
        for name in ("logs/server.log", "logs/jvm.out"):
            path = node_dir / name
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- node {node_id} {name} ---")
                out.extend(text)
        return "\n".join(out) if out else f"(node {node_id} wrote no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------------

    def _node(self, node_id: int) -> NodeState:
        if self.state is None:
            raise KafkaUnavailableError("the local cluster has not been started")
        for n in self.state.nodes:
            if n.node_id == node_id:
                return n
        raise KafkaUnavailableError(f"no kafka node {node_id} in this cluster")

    def _node_dir(self, node: NodeState) -> Path:
        return self.state_dir / f"node-{node.node_id}"

    def _save(self) -> None:
        if self.state is None:
            return
        tmp = self.state_dir / f"{STATE_FILE}.tmp"
        tmp.write_text(self.state.to_json())
        tmp.replace(self.state_dir / STATE_FILE)

    def _properties(self, node: NodeState) -> dict[str, str]:
        assert self.state is not None  # noqa: S101 - internal invariant
        host = self.state.host
        node_dir = self._node_dir(node)
        multi = len(self.state.nodes) > 1
        rf = "3" if multi else "1"
        min_isr = "2" if multi else "1"
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "listeners": f"PLAINTEXT://{host}:{node.client_port},CONTROLLER://{host}:{node.controller_port}",
            "advertised.listeners": (
                f"PLAINTEXT://{host}:{self.advertised_ports.get(node.node_id, node.client_port)},"
                f"CONTROLLER://{host}:{node.controller_port}"
            ),
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(node_dir / "data"),
            "auto.create.topics.enable": "false",
            "unclean.leader.election.enable": "false",
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            # Consumer groups in tests and the demo should not wait 3 s for a first rebalance.
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "3",
        }
        if self.tls is not None:
            client = f"SSL://{host}:{node.client_port}"
            controller = f"CONTROLLER://{host}:{node.controller_port}"
            props["listeners"] = props["advertised.listeners"] = f"{client},{controller}"
            props["inter.broker.listener.name"] = "SSL"
            props["listener.security.protocol.map"] = "CONTROLLER:SSL,SSL:SSL"
            props.update(self.tls.properties())
        if multi:
            props["controller.quorum.voters"] = ",".join(
                f"{n.node_id}@{host}:{n.controller_port}" for n in self.state.nodes
            )
        else:
            props["controller.quorum.bootstrap.servers"] = f"{host}:{node.controller_port}"
        props.update(self.extra_properties)
        return props

    def _write_config(self, node: NodeState) -> None:
        node_dir = self._node_dir(node)
        (node_dir / "logs").mkdir(parents=True, exist_ok=True)
        lines = [f"{k}={v}" for k, v in self._properties(node).items()]
        (node_dir / "server.properties").write_text("\n".join(lines) + "\n")
        (node_dir / "log4j2.properties").write_text(
            _LOG4J2.format(logfile=node_dir / "logs" / "server.log")
        )

    def _format(self, java: Path, libs: Path, node: NodeState) -> None:
        assert self.state is not None  # noqa: S101 - internal invariant
        cmd = [
            str(java),
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={self._node_dir(node) / 'log4j2.properties'}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.state.cluster_id,
            "-c",
            str(self._node_dir(node) / "server.properties"),
        ]
        if len(self.state.nodes) == 1:
            cmd.append("--standalone")
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if res.returncode != 0:
            raise KafkaStartError(
                f"formatting kafka node {node.node_id} failed (exit {res.returncode}): "
                f"{(res.stdout + res.stderr).strip()[-2000:]}"
            )

    def _spawn(self, java: Path, libs: Path, node: NodeState) -> None:
        node_dir = self._node_dir(node)
        cmd = [
            str(java),
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(self.heap_mb, 128)}m",
            "-server",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={node_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={node_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(node_dir / "server.properties"),
        ]
        out = (node_dir / "logs" / "jvm.out").open("ab")
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal must not reach the broker mid-write
                preexec_fn=_die_with_parent if self.tie_to_parent else None,  # noqa: PLW1509
            )
        except OSError as e:
            raise ToolMissingError(f"could not start {java}: {e}") from e
        finally:
            out.close()
        self._procs[node.node_id] = proc
        node.pid = proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); reap it if it is our child.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _wait_pid(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {logfile}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""
