"""Directory versions on disk and on the directory topic.

On disk, a *directory folder* holds ``v1.json``, ``v2.json``... (accepted versions, canonical JSON)
and at most one ``draft.json`` (the next version while admins sign it). On Kafka, each version is one
record on the single-partition directory topic, keyed by its version number, so a consumer that
starts fresh reads the whole chain in order and verifies it from its pinned first version.
"""

from __future__ import annotations

import re
from pathlib import Path

from intelbus.directory.model import SignedDirectory
from intelbus.directory.trust import DirectoryHistory
from intelbus.errors import DirectoryError, InvalidDirectory
from intelbus.files import atomic_write
from intelbus.log import get_logger
from intelbus.transport import kafka as transport

log = get_logger("intelbus.directory")

DRAFT = "draft.json"
_VERSION_FILE = re.compile(r"^v(\d+)\.json$")


def version_path(folder: Path, version: int) -> Path:
    """Path of an accepted version in a directory folder."""
    return folder / f"v{version}.json"


def load_file(path: Path) -> SignedDirectory:
    """Parse one directory document file.

    Raises:
        InvalidDirectory: unreadable or invalid.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidDirectory(f"cannot read {path}: {e.strerror}") from e
    return SignedDirectory.from_bytes(data)


def write_file(path: Path, doc: SignedDirectory) -> None:
    """Write a document atomically: a uniquely named file beside ``path``, then a rename.

    Directory documents are public, so the file is 0644; it is never written through a symbolic
    link (a link at ``path`` is replaced, not followed).
    """
    atomic_write(path, doc.to_bytes() + b"\n", mode=0o644)


def folder_versions(folder: Path) -> list[int]:
    """Accepted version numbers present in a directory folder, ascending."""
    found = []
    for p in folder.iterdir() if folder.is_dir() else []:
        m = _VERSION_FILE.match(p.name)
        if m:
            found.append(int(m.group(1)))
    return sorted(found)


def load_folder(folder: Path, pinned: SignedDirectory | None = None) -> DirectoryHistory:
    """Verify a folder's chain from ``pinned`` (default: the folder's own v1) to its newest version.

    Raises:
        InvalidDirectory, ThresholdNotMet, BadVersion: the chain does not verify.
    """
    versions = folder_versions(folder)
    if not versions:
        raise InvalidDirectory(f"no directory versions in {folder}")
    root = pinned if pinned is not None else load_file(version_path(folder, versions[0]))
    history = DirectoryHistory(root)
    for v in versions:
        if v <= root.signed.version:
            continue
        history.update(load_file(version_path(folder, v)))
    return history


def publish_to_topic(bootstrap_servers: str, topic: str, docs: list[SignedDirectory]) -> None:
    """Append versions to the directory topic (acks=all); waits for each to be acknowledged."""
    producer = transport.make_producer(bootstrap_servers)
    try:
        for doc in docs:
            producer.send(topic, value=doc.to_bytes(), key=str(doc.signed.version).encode()).get(
                timeout=60
            )
            log.info("directory.published", version=doc.signed.version, topic=topic)
    finally:
        producer.close()


def published_versions(bootstrap_servers: str, topic: str, history: DirectoryHistory) -> set[int]:
    """Which of ``history``'s (verified) versions are on the directory topic, exactly as trusted.

    A document on the topic counts only if it is byte for byte the version ``history`` holds
    (its body and every signature): a forged "v7", or the genuine v7 stripped of a signature,
    put on the topic first must not stop the genuine v7 from being published.
    """
    ours = {doc.signed.version: doc.to_bytes() for doc in history.versions}
    return {
        doc.signed.version
        for doc in _read_topic(bootstrap_servers, topic)
        if ours.get(doc.signed.version) == doc.to_bytes()
    }


def _read_topic(bootstrap_servers: str, topic: str) -> list[SignedDirectory]:
    docs: list[SignedDirectory] = []
    consumer = transport.make_consumer(bootstrap_servers, group_id=None, consumer_timeout_ms=3_000)
    try:
        for record in transport.read_all(consumer, topic):
            try:
                docs.append(SignedDirectory.from_bytes(record.value))
            except InvalidDirectory as e:
                log.warning("directory.invalid_on_topic", offset=record.offset, error=str(e)[:200])
    finally:
        consumer.close()
    return docs


def fetch_from_topic(
    bootstrap_servers: str, topic: str, pinned: SignedDirectory
) -> tuple[DirectoryHistory, list[str]]:
    """Start from ``pinned`` and apply every newer version found on the topic, in order.

    Returns the history and a list of problems (invalid or refused documents are reported and
    skipped, never trusted; a later valid N+1 still applies).
    """
    history = DirectoryHistory(pinned)
    problems: list[str] = []
    for doc in sorted(_read_topic(bootstrap_servers, topic), key=lambda d: d.signed.version):
        if doc.signed.version <= history.latest.version:
            continue
        try:
            history.update(doc)
        except DirectoryError as e:
            # Reported and skipped, never trusted; a genuine N+1 later on the topic still applies.
            problems.append(f"{type(e).__name__}: {e}")
    return history, problems
