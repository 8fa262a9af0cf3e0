"""The fault cases: each inflicts one fault on a real 3-node cluster while records flow, heals it,
lets the consumer finish, and hands the three views (history, topic, store) to the checker.

A case passes when the checker's must-be-zero figures are zero *and* its own expectations hold
(for example: no send acknowledged while two brokers were down; the consumer really died at the
named crash point). Faults: ``kill -9`` and ``SIGSTOP``/``SIGCONT`` of broker JVMs, ``kill -9`` of the
producer and consumer processes, a store that cannot grow (``RLIMIT_FSIZE``: the disk is full), and
the TCP proxy (tests/faults/proxy.py).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy.kafka.launcher import LocalKafka
from intelbus.errors import KafkaUnavailableError
from intelbus.transport import kafka as transport
from tests.faults import checker
from tests.faults.history import Status, read_history
from tests.faults.proxy import Mode, TcpProxy
from tests.faults.workspace import FORCE, Workspace, build

REPO = Path(__file__).resolve().parents[2]
SESSION_WAIT_S = (
    15.0  # past the brokers' 9 s session timeout (KRaft default) and the consumer's 10 s
)


class FaultSetupError(RuntimeError):
    """The case could not inflict its fault (e.g. the producer finished first): it proves nothing."""


# --- The bed: one 3-node cluster (optionally behind proxies) shared by every case. ----------------------


@dataclass
class Bed:
    """A running 3-node cluster, its proxies (node id -> proxy) if any, and a scratch folder."""

    cluster: LocalKafka
    root: Path
    proxies: dict[int, TcpProxy] = field(default_factory=dict)
    paused: set[int] = field(default_factory=set)

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap_servers

    def heal(self) -> None:
        """Resume paused nodes, restart dead ones, set every proxy back to pass."""
        for node in sorted(self.paused):
            with contextlib.suppress(KafkaUnavailableError, ProcessLookupError):
                self.cluster.signal_node(node, signal.SIGCONT)
        self.paused.clear()
        for proxy in self.proxies.values():
            proxy.set_mode(Mode.PASS)
        running = set(self.cluster.running_nodes())
        for node in (1, 2, 3):
            if node not in running:
                self.cluster.start_node(node)
        self.cluster.wait_ready(120)

    def leader(self, topic: str, partition: int, timeout_s: float = 60.0) -> tuple[int, list[int]]:
        """(leader, ISR) of one partition, waiting while it has no leader."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                leader, isr = transport.partition_leaders(self.bootstrap, topic)[partition]
                if leader >= 0:
                    return leader, isr
            except (KafkaUnavailableError, KeyError) as e:
                last = e
            time.sleep(0.5)
        raise FaultSetupError(f"partition {topic}/{partition} has no leader ({last})")


@contextlib.contextmanager
def open_bed(root: Path, *, proxied: bool) -> Iterator[Bed]:
    """Start the cluster (RF 3, min ISR 2 by default for 3 nodes); with ``proxied``, every node
    advertises a proxy's port, so clients and replica fetchers go through the proxies.

    Raises:
        KafkaStartError: a broker did not start (the caller must fail, never skip).
    """
    proxies: dict[int, TcpProxy] = {}
    cluster_box: list[LocalKafka] = []
    if proxied:
        for node in (1, 2, 3):

            def upstream(node: int = node) -> tuple[str, int]:
                return ("127.0.0.1", cluster_box[0].node_ports()[node])

            proxies[node] = TcpProxy(upstream)
            proxies[node].start()
    cluster = LocalKafka(
        root / "cluster",
        nodes=3,
        heap_mb=320,
        advertised_ports={n: p.port for n, p in proxies.items()},
    )
    cluster_box.append(cluster)
    try:
        cluster.start(timeout=180)
        yield Bed(cluster, root, proxies)
    finally:
        with contextlib.suppress(Exception):
            for node in list(cluster.state.nodes if cluster.state else []):
                if node.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(node.pid, signal.SIGCONT)
        cluster.stop()
        for proxy in proxies.values():
            proxy.stop()


# --- Processes. --------------------------------------------------------------------------------------


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "INTELBUS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.update(extra or {})
    return env


def start_producer(
    ws: Workspace,
    history: Path,
    count: int,
    *,
    seed: int,
    batch: int = 200,
    pause_ms: int = 0,
    no_recover: bool = False,
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "tests.faults.produce",
        "--config",
        str(ws.producer_config),
        "--history",
        str(history),
        "--count",
        str(count),
        "--seed",
        str(seed),
        "--batch",
        str(batch),
        "--pause-ms",
        str(pause_ms),
    ]
    if no_recover:
        cmd.append("--no-recover")
    log = (ws.root / "producer.log").open("ab")
    try:
        return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def wait_producer(proc: subprocess.Popen[bytes], ws: Workspace, timeout_s: float = 600) -> int:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise FaultSetupError(
            f"the producer did not finish in {timeout_s:.0f}s: {_tail(ws)}"
        ) from None


def _tail(ws: Workspace, name: str = "producer.log") -> str:
    path = ws.root / name
    return path.read_text(errors="replace")[-1500:] if path.is_file() else "(no log)"


def finish_producer(
    proc: subprocess.Popen[bytes],
    ws: Workspace,
    history: Path,
    result: CaseResult,
    *,
    count: int,
    seed: int,
) -> None:
    """Wait for the producer. If it died (not by our kill), record why and restart it once, as a
    supervisor would, so the case still checks what the restart path recovers."""
    code = wait_producer(proc, ws)
    result.figures["producer_exit"] = code
    result.expectations["producer exited 0"] = code == 0
    if code != 0:
        errors = [ln for ln in _tail(ws).splitlines() if "Error" in ln and not ln.startswith(" ")]
        result.figures["producer_error"] = errors[-1][:300] if errors else f"exit {code}"
        bed_heal = result.figures.setdefault("producer_restarts", 0)
        result.figures["producer_restarts"] = bed_heal + 1
        again = wait_producer(start_producer(ws, history, count, seed=seed), ws)
        result.figures["producer_exit_after_restart"] = again
        result.expectations["the restarted producer exited 0"] = again == 0


def acked(history: Path) -> int:
    """How many ok events the history holds so far (cheap enough to poll)."""
    if not history.is_file():
        return 0
    return history.read_text(errors="replace").count('"status":"ok"')


def wait_acked(
    history: Path,
    n: int,
    proc: subprocess.Popen[bytes] | None,
    ws: Workspace,
    timeout_s: float = 300,
) -> int:
    """Block until ``n`` sends are acknowledged; fail if the producer exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = acked(history)
        if got >= n:
            return got
        if proc is not None and proc.poll() is not None:
            raise FaultSetupError(
                f"the producer exited ({proc.returncode}) at {got} acks, before {n}: {_tail(ws)}"
            )
        time.sleep(0.1)
    raise FaultSetupError(f"only {acked(history)} of {n} acks after {timeout_s:.0f}s")


def first_partition(history: Path) -> int:
    for e in read_history(history):
        if e.status is Status.OK and e.partition is not None:
            return e.partition
    raise FaultSetupError("no acknowledged send yet")


def run_consumer(
    ws: Workspace,
    config: Path,
    *,
    env: dict[str, str] | None = None,
    fsize_limit: int | None = None,
    timeout_s: float = 600,
) -> int:
    """``intelbus consume --until-idle`` as a process; returns its exit code (-9: SIGKILLed)."""

    def limit() -> None:  # pragma: no cover - runs in the child
        # The disk is "full" for this process: a write that grows a file past the limit fails with
        # EFBIG (Python ignores SIGXFSZ), which SQLite reports as "database or disk is full".
        assert fsize_limit is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

    cmd = [
        sys.executable,
        "-m",
        "intelbus.cli",
        "consume",
        "--agency",
        FORCE,
        "--config",
        str(config),
        "--until-idle",
    ]
    with (ws.root / "consumer.log").open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit if fsize_limit is not None else None,  # noqa: PLW1509 - setrlimit only
        )
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise FaultSetupError(f"the consumer did not finish in {timeout_s:.0f}s") from None


# --- Verdicts. -----------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One case of the report card."""

    name: str
    fault: str
    records: int
    passed: bool = False
    seconds: float = 0.0
    check: dict[str, Any] = field(default_factory=dict)
    expectations: dict[str, bool] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(
    bed: Bed,
    ws: Workspace,
    result: CaseResult,
    history: Path,
    *,
    consumer: str = "main",
    consume: bool = True,
) -> checker.CheckReport:
    """Heal, run the consumer to the end (unless done already), check, and fill ``result``."""
    bed.heal()
    config, store, group = ws.consumer(consumer)
    if consume:
        code = run_consumer(ws, config)
        result.expectations["consumer exited 0"] = code == 0
    report = checker.check(
        read_history(history),
        checker.read_topic(bed.bootstrap, ws.topic),
        checker.read_store(store, group_id=group),
    )
    view = checker.read_store(store, group_id=group)
    kafka = transport.committed_offsets(bed.bootstrap, group)
    ahead = sum(1 for tp, off in kafka.items() if off > view.offsets.get(tp, 0))
    result.figures["kafka_commits_ahead_of_store"] = ahead
    result.expectations["Kafka offsets never ahead of the store's"] = ahead == 0
    # Every copy the consumer saw twice must be a topic duplicate it refused as a replay: an older
    # record again is a `chain_replay`, the stream's newest record again a `chain_duplicate`.
    resent = ("chain_replay", "chain_duplicate")
    replays = sum(report.quarantined.get(code, 0) for code in resent)
    other = {k: v for k, v in report.quarantined.items() if k not in resent}
    result.expectations["only replays of resent copies quarantined"] = (
        not other and replays <= report.topic_duplicates
    )
    result.check = report.to_dict()
    result.passed = report.passed and all(result.expectations.values())
    return report


# --- The cases. ----------------------------------------------------------------------------------------


def leader_kill(
    bed: Bed, ws: Workspace, *, count: int, kills: int, seed: int, pause_ms: int = 0
) -> CaseResult:
    """kill -9 the partition leader ``kills`` times during the produce, restarting it each time."""
    result = CaseResult(
        "leader-kill-9", f"kill -9 the partition leader {kills}x mid-produce (restarted)", count
    )
    history = ws.root / "history.jsonl"
    # A steady-rate producer (100 records per batch, ``pause_ms`` between batches), so that every
    # kill, election and restart lands while records are still flowing.
    proc = start_producer(ws, history, count, seed=seed, batch=100, pause_ms=pause_ms)
    killed: list[int] = []
    try:
        for k in range(kills):
            wait_acked(history, count * (k + 1) // (kills + 1), proc, ws)
            leader, _ = bed.leader(ws.topic, first_partition(history))
            bed.cluster.stop_node(leader, sig=signal.SIGKILL)
            killed.append(leader)
            at_kill = acked(history)
            if at_kill >= count:
                raise FaultSetupError("the produce finished before the kill")
            # Let the survivors elect a leader and take writes, then bring the node back.
            with contextlib.suppress(FaultSetupError):
                wait_acked(history, min(count, at_kill + 200), proc, ws, timeout_s=60)
            bed.cluster.start_node(leader)
        finish_producer(proc, ws, history, result, count=count, seed=seed)
    finally:
        if proc.poll() is None:
            proc.kill()
    result.figures["killed_leaders"] = killed
    verdict(bed, ws, result, history)
    return result


def follower_kill(bed: Bed, ws: Workspace, *, count: int, seed: int) -> CaseResult:
    """kill -9 one follower of the partition for the middle third of the produce."""
    result = CaseResult("follower-kill-9", "kill -9 a follower mid-produce (restarted)", count)
    history = ws.root / "history.jsonl"
    proc = start_producer(ws, history, count, seed=seed)
    try:
        wait_acked(history, count // 3, proc, ws)
        leader, _ = bed.leader(ws.topic, first_partition(history))
        follower = next(n for n in (1, 2, 3) if n != leader)
        bed.cluster.stop_node(follower, sig=signal.SIGKILL)
        result.figures["killed_follower"] = follower
        if acked(history) >= count:
            raise FaultSetupError("the produce finished before the kill")
        wait_acked(history, 2 * count // 3, proc, ws)
        bed.cluster.start_node(follower)
        finish_producer(proc, ws, history, result, count=count, seed=seed)
    finally:
        if proc.poll() is None:
            proc.kill()
    verdict(bed, ws, result, history)
    return result


def leader_pause(bed: Bed, ws: Workspace, *, count: int, seed: int) -> CaseResult:
    """SIGSTOP the leader past the session timeout (a new leader is elected), then SIGCONT it."""
    result = CaseResult(
        "leader-sigstop",
        f"SIGSTOP the partition leader for {SESSION_WAIT_S:.0f}s (past the session timeout), then SIGCONT",
        count,
    )
    history = ws.root / "history.jsonl"
    proc = start_producer(ws, history, count, seed=seed)
    try:
        wait_acked(history, count // 3, proc, ws)
        partition = first_partition(history)
        leader, _ = bed.leader(ws.topic, partition)
        bed.cluster.signal_node(leader, signal.SIGSTOP)
        bed.paused.add(leader)
        if acked(history) >= count:
            raise FaultSetupError("the produce finished before the pause")
        time.sleep(SESSION_WAIT_S)
        new_leader, _ = bed.leader(ws.topic, partition)
        result.figures["paused_leader"] = leader
        result.figures["leader_while_paused"] = new_leader
        bed.cluster.signal_node(leader, signal.SIGCONT)
        bed.paused.discard(leader)
        finish_producer(proc, ws, history, result, count=count, seed=seed)
    finally:
        if proc.poll() is None:
            proc.kill()
    result.expectations["a new leader was elected while paused"] = (
        result.figures["leader_while_paused"] != result.figures["paused_leader"]
    )
    verdict(bed, ws, result, history)
    return result


def two_down(bed: Bed, ws: Workspace, *, count: int, seed: int) -> CaseResult:
    """Two of three brokers kill -9'ed: sends must fail and none may be acknowledged; after the
    restart the pending records are resent and nothing acknowledged earlier is lost."""
    result = CaseResult(
        "two-of-three-down", "kill -9 two of three brokers; publish; restart them", count
    )
    history = ws.root / "history.jsonl"
    outage = ws.root / "history-outage.jsonl"
    first = count // 2
    proc = start_producer(ws, history, first, seed=seed)
    result.figures["producer_exit_before"] = wait_producer(proc, ws)
    leader, _ = bed.leader(ws.topic, first_partition(history))
    down = [leader, next(n for n in (1, 2, 3) if n != leader)]
    for node in down:
        bed.cluster.stop_node(node, sig=signal.SIGKILL)
    result.figures["killed"] = down
    proc = start_producer(ws, outage, first + 3, seed=seed, batch=1, no_recover=True)
    code = wait_producer(proc, ws)
    outage_events = read_history(outage)
    result.figures["producer_exit_during_outage"] = code
    result.figures["attempted_during_outage"] = len({e.record_id for e in outage_events})
    result.figures["acked_during_outage"] = sum(1 for e in outage_events if e.status is Status.OK)
    result.expectations["no send acknowledged while two brokers were down"] = (
        result.figures["acked_during_outage"] == 0
    )
    result.expectations["the producer reported the refusal"] = code != 0
    result.expectations["at least one send was attempted during the outage"] = (
        result.figures["attempted_during_outage"] > 0
    )
    bed.heal()
    proc = start_producer(ws, outage, count, seed=seed)
    result.figures["producer_exit_after"] = wait_producer(proc, ws)
    result.expectations["producer exited 0 after the restart"] = (
        result.figures["producer_exit_after"] == 0
    )
    merged = ws.root / "history-all.jsonl"
    merged.write_text(history.read_text() + outage.read_text())
    verdict(bed, ws, result, merged)
    return result


def producer_kill(bed: Bed, ws: Workspace, *, count: int, kills: int, seed: int) -> CaseResult:
    """kill -9 the producer process mid-batch, ``kills`` times, restarting it each time."""
    result = CaseResult(
        "producer-kill-9", f"kill -9 the producer process {kills}x mid-batch (restarted)", count
    )
    history = ws.root / "history.jsonl"
    exits: list[int] = []
    for k in range(kills):
        proc = start_producer(ws, history, count, seed=seed)
        try:
            wait_acked(history, count * (k + 1) // (kills + 1), proc, ws)
            proc.send_signal(signal.SIGKILL)
            exits.append(proc.wait(30))
        finally:
            if proc.poll() is None:
                proc.kill()
    proc = start_producer(ws, history, count, seed=seed)
    result.figures["producer_exit"] = wait_producer(proc, ws)
    result.figures["killed_exit_codes"] = exits
    result.expectations["every kill landed mid-run"] = exits == [-signal.SIGKILL] * kills
    result.expectations["producer exited 0"] = result.figures["producer_exit"] == 0
    verdict(bed, ws, result, history)
    return result


def consumer_crash(
    bed: Bed,
    ws: Workspace,
    history: Path,
    *,
    point: str,
    count: int,
    batch_size: int = 200,
    postgres: str | None = None,
) -> CaseResult:
    """The consumer SIGKILLs itself at ``point`` of its 3rd batch; a restart must finish the job
    with every record stored once and no replay quarantined (the store's offsets win). The store
    is SQLite, or the PostgreSQL database ``postgres``."""
    suffix = "-postgres" if postgres else ""
    result = CaseResult(
        f"consumer-kill-9-{point.replace('_', '-')}{suffix}",
        f"consumer kill -9 {point}" + (" (PostgreSQL store)" if postgres else ""),
        count,
    )
    name = point + suffix
    config, store, _ = ws.consumer(name, batch_size=batch_size, store=postgres)
    code = run_consumer(
        ws, config, env={"INTELBUS_CRASH_AT": point, "INTELBUS_CRASH_AT_BATCH": "3"}
    )
    result.figures["crash_exit"] = code
    result.expectations["the consumer died at the crash point"] = code == -signal.SIGKILL
    crashed = checker.read_store(store)
    result.figures["stored_at_crash"] = len(crashed.rows)
    result.figures["store_offsets_at_crash"] = sum(crashed.offsets.values())
    result.expectations["batches were committed before the crash"] = len(crashed.rows) > 0
    # The produced topic is clean (no duplicates, every record stored), so rows and offsets agree
    # exactly when records and offsets were committed together: a half transaction left nothing.
    result.expectations["store rows match its stored offsets at the crash"] = len(
        crashed.rows
    ) == sum(crashed.offsets.values())
    code = run_consumer(ws, config)
    result.expectations["the restarted consumer exited 0"] = code == 0
    verdict(bed, ws, result, history, consumer=name, consume=False)
    return result


def offsets_match_rows(view: checker.StoreView) -> bool:
    """Each stored offset is one past the last stored row of its partition, and rows have offsets.

    With no offsets at all, every comparison would be vacuously true while rows sat uncommitted.
    """
    partitions = {(r.topic, r.partition) for r in view.rows}
    return set(view.offsets) == partitions and all(
        off == 1 + max(r.offset for r in view.rows if (r.topic, r.partition) == tp)
        for tp, off in view.offsets.items()
    )


def store_full(
    bed: Bed, ws: Workspace, history: Path, *, count: int, batch_size: int = 100
) -> CaseResult:
    """The store's disk fills (RLIMIT_FSIZE): the consumer must stop without committing offsets past
    what it stored, lose nothing, and finish once the disk has room again."""
    result = CaseResult("store-disk-full", "the store cannot grow (disk full), then can", count)
    config, store, group = ws.consumer("disk-full", batch_size=batch_size)
    limit = 600 * 1024
    code = run_consumer(ws, config, fsize_limit=limit)
    view = checker.read_store(store, group_id=group)
    result.figures["exit_when_full"] = code
    result.figures["stored_when_full"] = len(view.rows)
    result.expectations["the consumer stopped (non-zero exit) rather than skip records"] = (
        code
        not in (
            0,
            -signal.SIGKILL,
        )
    )
    result.expectations["it stored something, then hit the limit"] = 0 < len(view.rows) < count
    result.expectations["stored offsets match the stored rows"] = offsets_match_rows(view)
    kafka = transport.committed_offsets(bed.bootstrap, group)
    result.expectations["Kafka offsets not past the store's while full"] = all(
        off <= view.offsets.get(tp, 0) for tp, off in kafka.items()
    )
    code = run_consumer(ws, config)
    result.expectations["the consumer finished once the disk had room"] = code == 0
    verdict(bed, ws, result, history, consumer="disk-full", consume=False)
    return result


def proxy_fault(
    bed: Bed,
    ws: Workspace,
    *,
    name: str,
    mode: Mode,
    hold_s: float,
    count: int,
    seed: int,
    **settings: Any,
) -> CaseResult:
    """Put the partition leader's proxy in ``mode`` for ``hold_s`` seconds mid-produce."""
    result = CaseResult(
        name, f"proxy {mode.value} in front of the partition leader for {hold_s:.0f}s", count
    )
    history = ws.root / "history.jsonl"
    proc = start_producer(ws, history, count, seed=seed)
    try:
        wait_acked(history, count // 3, proc, ws)
        leader, _ = bed.leader(ws.topic, first_partition(history))
        proxy = bed.proxies[leader]
        before = proxy.stats.dropped_bytes, proxy.stats.resets
        proxy.set_mode(mode, **settings)
        if acked(history) >= count:
            raise FaultSetupError("the produce finished before the fault")
        time.sleep(hold_s)
        acks_during = acked(history)
        proxy.set_mode(Mode.PASS)
        result.figures["proxied_leader"] = leader
        result.figures["dropped_bytes"] = proxy.stats.dropped_bytes - before[0]
        result.figures["resets"] = proxy.stats.resets - before[1]
        result.figures["acked_by_end_of_fault"] = acks_during
        finish_producer(proc, ws, history, result, count=count, seed=seed)
    finally:
        if proc.poll() is None:
            proc.kill()
    verdict(bed, ws, result, history)
    return result


# --- The matrix. ---------------------------------------------------------------------------------------


def run_case(name: str, records: int, fn: Callable[[], CaseResult], fault: str = "") -> CaseResult:
    """Run one case; an exception becomes a failed case with the error, never a silent gap."""
    started = time.monotonic()
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - reported on the card as this case's error
        result = CaseResult(
            name, fault, records, passed=False, error=f"{type(e).__name__}: {e}"[:2000]
        )
    result.seconds = round(time.monotonic() - started, 1)
    return result


def matrix(
    bed: Bed,
    *,
    seed: int,
    scale: int,
    postgres: Callable[[], contextlib.AbstractContextManager[str]],
) -> list[CaseResult]:
    """Every case, on fresh topics each (the consumer-side cases share one produced topic).

    ``scale`` is the record count of the big leader-kill case; the others use fractions of it.
    ``postgres`` gives a fresh empty PostgreSQL database (or raises why it cannot) for the
    consumer crash points on that store.
    """
    small = max(2000, scale // 4)
    out: list[CaseResult] = []

    def ws(name: str) -> Workspace:
        bed.heal()
        return build(bed.root / name, bed.bootstrap)

    out.append(
        run_case(
            "leader-kill-9",
            scale,
            lambda: leader_kill(
                bed, ws("leader-kill"), count=scale, kills=4, seed=seed, pause_ms=800
            ),
        )
    )
    out.append(
        run_case(
            "follower-kill-9",
            small,
            lambda: follower_kill(bed, ws("follower-kill"), count=small, seed=seed + 1),
        )
    )
    out.append(
        run_case(
            "leader-sigstop",
            small,
            lambda: leader_pause(bed, ws("leader-pause"), count=small, seed=seed + 2),
        )
    )
    out.append(
        run_case(
            "two-of-three-down",
            small,
            lambda: two_down(bed, ws("two-down"), count=small, seed=seed + 3),
        )
    )
    out.append(
        run_case(
            "producer-kill-9",
            small,
            lambda: producer_kill(bed, ws("producer-kill"), count=small, kills=2, seed=seed + 4),
        )
    )
    for name, mode, hold, settings in (
        ("proxy-blackhole-leader", Mode.BLACKHOLE, 20.0, {}),
        ("proxy-slow-leader", Mode.DELAY, 15.0, {"delay_s": 0.05}),
        ("proxy-trickle-leader", Mode.TRICKLE, 10.0, {"rate_bytes_per_s": 32 * 1024}),
        ("proxy-reset-leader", Mode.RESET, 10.0, {}),
    ):
        out.append(
            run_case(
                name,
                small,
                lambda name=name, mode=mode, hold=hold, settings=settings: proxy_fault(
                    bed,
                    ws(name),
                    name=name,
                    mode=mode,
                    hold_s=hold,
                    count=small,
                    seed=seed + 5,
                    **settings,
                ),
            )
        )
    # Consumer-side faults: one clean produce, then each consumer case on its own store and group.
    consumer_count = max(2000, scale // 10)
    shared: list[tuple[Workspace, Path]] = []

    def produced() -> tuple[Workspace, Path]:
        if not shared:
            w = ws("consumer-side")
            history = w.root / "history.jsonl"
            code = wait_producer(start_producer(w, history, consumer_count, seed=seed + 6), w)
            if code != 0:
                raise FaultSetupError(f"the clean produce failed ({code}): {_tail(w)}")
            shared.append((w, history))
        return shared[0]

    for point in ("after_poll", "mid_transaction", "after_db_commit"):
        out.append(
            run_case(
                f"consumer-kill-9-{point.replace('_', '-')}",
                consumer_count,
                lambda point=point: consumer_crash(
                    bed, *produced(), point=point, count=consumer_count
                ),
            )
        )
    for point in ("after_poll", "mid_transaction", "after_db_commit"):

        def on_postgres(point: str = point) -> CaseResult:
            with postgres() as url:
                return consumer_crash(
                    bed, *produced(), point=point, count=consumer_count, postgres=url
                )

        out.append(
            run_case(
                f"consumer-kill-9-{point.replace('_', '-')}-postgres",
                consumer_count,
                on_postgres,
                f"consumer kill -9 {point} (PostgreSQL store)",
            )
        )
    out.append(
        run_case(
            "store-disk-full",
            consumer_count,
            lambda: store_full(bed, *produced(), count=consumer_count),
        )
    )
    return out
