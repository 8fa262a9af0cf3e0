"""Following the directory topic: every role learns new directory versions while it runs.

Publishers, consumers and auditors start from their directory folder (a pinned first version and
the versions verified since) and read the single-partition directory topic for newer ones. A
document on the topic is trusted only if it verifies as exactly the next version from what is
already trusted (:meth:`~intelbus.directory.trust.DirectoryHistory.update`): a forged "v7" put
on the topic first is reported and skipped, and the genuine v7 after it still applies. Versions
that arrive ahead of their predecessor wait (a few of them) until it comes. Accepted versions are
written to the folder, so a restart does not depend on the topic.

Freshness (TUF's freeze attack: someone withholds new versions so a revoked key stays trusted):
each version expires. :func:`freshness` says how a history stands at a time: fresh, expiring
(less than a quarter of its validity left: time to publish the next version), or expired, when
every role refuses to act on it until a newer version is fetched (``intelbus directory refresh``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from intelbus.directory.model import DirectoryBody, SignedDirectory
from intelbus.directory.store import version_path, write_file
from intelbus.directory.trust import DirectoryHistory
from intelbus.errors import DirectoryError, DirectoryExpired, IntelbusError, TopicMissing
from intelbus.log import get_logger
from intelbus.transport import kafka as transport
from intelbus.transport.client import KafkaClient
from intelbus.transport.security import TransportSecurity

log = get_logger("intelbus.directory.follow")

#: Versions ahead of the next expected one kept while their predecessor has not arrived.
MAX_AHEAD = 16
#: Below this share of its validity left, a version is "expiring".
EXPIRING_SHARE = 0.25


class Freshness(enum.StrEnum):
    """How the newest trusted directory version stands at a time."""

    FRESH = "fresh"
    EXPIRING = "expiring"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class DirectoryHealth:
    """The newest trusted version, when it expires, and how it stands at ``at``."""

    version: int
    issued_at: datetime
    expires: datetime
    at: datetime
    state: Freshness

    @property
    def left(self) -> timedelta:
        return self.expires - self.at

    def describe(self) -> str:
        """One line for a person."""
        if self.state is Freshness.EXPIRED:
            return (
                f"directory v{self.version} expired at {self.expires.isoformat()}: fetch a newer "
                "version (intelbus directory refresh) before publishing, consuming or auditing"
            )
        hours = self.left.total_seconds() / 3600
        return f"directory v{self.version} is {self.state.value}: {hours:.1f} h left"


def freshness(history: DirectoryHistory, at: datetime) -> DirectoryHealth:
    """How ``history``'s newest version stands at ``at`` (module docstring)."""
    body = history.latest
    lifetime = body.expires - body.issued_at
    left = body.expires - at
    if left <= timedelta(0):
        state = Freshness.EXPIRED
    elif left < lifetime * EXPIRING_SHARE:
        state = Freshness.EXPIRING
    else:
        state = Freshness.FRESH
    return DirectoryHealth(body.version, body.issued_at, body.expires, at, state)


def require_fresh(history: DirectoryHistory, at: datetime) -> DirectoryHealth:
    """:func:`freshness`, refusing an expired directory.

    Raises:
        DirectoryExpired: the newest trusted version has expired at ``at``.
    """
    health = freshness(history, at)
    if health.state is Freshness.EXPIRED:
        raise DirectoryExpired(health.describe())
    return health


class DirectoryFollower:
    """Reads the directory topic from where it left off and applies verified new versions.

    Not thread-safe; one per process role. The Kafka consumer is made on first use and has no
    group: following the directory never commits anything.
    """

    def __init__(
        self,
        history: DirectoryHistory,
        *,
        bootstrap_servers: str,
        topic: str,
        folder: Path | None = None,
        security: TransportSecurity | None = None,
        client: KafkaClient | None = None,
    ) -> None:
        self.history = history
        self.bootstrap = bootstrap_servers
        self.topic = topic
        self.folder = folder
        self.security = security
        # None: INTELBUS_KAFKA_CLIENT, else kafka-python (intelbus/transport/client.py).
        self.client = KafkaClient.resolve(client)
        self.next_offset = 0
        self.problems: list[str] = []
        self.missing = False  # the topic did not exist at the last read
        self._ahead: dict[int, SignedDirectory] = {}
        self._consumer: Any = None

    def catch_up(self) -> list[DirectoryBody]:
        """Read to the topic's end now; return the versions newly trusted, oldest first.

        Raises:
            KafkaUnavailableError: the topic cannot be read.
        """
        if self._consumer is None:
            self._consumer = transport.make_consumer(
                self.bootstrap, group_id=None, security=self.security, client=self.client
            )
        try:
            messages, self.next_offset = transport.read_partition(
                self._consumer, self.topic, 0, self.next_offset
            )
        except TopicMissing:
            # Nothing to follow: the folder's versions stand, and expiry still bounds them.
            if not self.missing:
                self.missing = True
                log.warning("directory.topic_missing", topic=self.topic)
            return []
        self.missing = False
        accepted: list[DirectoryBody] = []
        for m in messages:
            try:
                doc = SignedDirectory.from_bytes(m.value)
            except DirectoryError as e:
                self._problem(m.offset, e)
                continue
            accepted.extend(self.offer(doc, offset=m.offset))
        return accepted

    def offer(self, doc: SignedDirectory, *, offset: int = -1) -> list[DirectoryBody]:
        """Apply one document (and any waiting successors it unblocks); return what was trusted."""
        latest = self.history.latest.version
        version = doc.signed.version
        if version > latest + 1:
            if len(self._ahead) < MAX_AHEAD and version not in self._ahead:
                self._ahead[version] = doc
            return []
        accepted: list[DirectoryBody] = []
        candidate: SignedDirectory | None = doc
        while candidate is not None:
            try:
                changed = self.history.update(candidate)
            except DirectoryError as e:
                self._problem(offset, e)
                return accepted
            if not changed:
                return accepted
            body = candidate.signed
            accepted.append(body)
            self._persist(candidate)
            log.info("directory.updated", version=body.version, expires=body.expires.isoformat())
            candidate = self._ahead.pop(body.version + 1, None)
            offset = -1
        return accepted

    def _persist(self, doc: SignedDirectory) -> None:
        if self.folder is None:
            return
        path = version_path(self.folder, doc.signed.version)
        try:
            if not path.exists():
                write_file(path, doc)
        except (OSError, IntelbusError) as e:
            # The version is trusted in memory; failing to cache it must not stop the role.
            log.warning("directory.not_saved", version=doc.signed.version, error=type(e).__name__)

    def _problem(self, offset: int, error: Exception) -> None:
        text = f"offset {offset}: {type(error).__name__}: {str(error)[:200]}"
        if len(self.problems) < 100:
            self.problems.append(text)
        log.warning(
            "directory.refused", topic=self.topic, offset=offset, error=type(error).__name__
        )

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
