"""An order-independent digest of everything one replay of a topic saw (docs/audit.md, "Digest").

Two parties (an auditor and a force) each compute it over the records they read and compare one
short value, without exchanging contents. It must not depend on the order records were read in
(partitions interleave differently for each reader), and it must fit in bounded memory however
many records a topic holds. So it is a *multiset hash*: each record maps to an item hash, and the
items are added up.

Item of a record:

* an authentic record (it passed envelope verification): ``(record id, record digest)``, the
  record digest being BLAKE2b-256 of its signed bytes (docs/envelope.md step 7). Ed25519 in
  libsodium is deterministic and non-malleable, so the signed bytes fix the whole record. This is
  the digest a force's store already keeps for every record it stored or withheld, so a force can
  compute the same value from its store, without the raw bytes;
* any other record (tampered, forged, garbage): BLAKE2b-256 of its raw bytes, under another tag,
  so a record that merely *claims* an id cannot stand in for the authentic one.

Every occurrence counts (a multiset): a record read twice (a replay) counts twice.

Combination (AdHash, Bellare and Micciancio 1997, with a large modulus): each item is expanded
with SHAKE-256 to 4096 bits and the items are summed modulo 2^4096. XOR would be unsafe (a record
read twice would cancel out); a sum modulo 2^256 would be within reach of Wagner's generalised
birthday attack (2002), which finds sets with equal sums in about 2^(2*sqrt(n)) work for an
n-bit modulus. At n = 4096 that is about 2^128, the same margin as the rest of the bus; LtHash
(Lewi et al., 2019) makes the same choice of a wide additive state. The state is 512 bytes and
a count, whatever the number of records. The printed value is BLAKE2b-256 over a domain tag, the
topic, the count and the sum.

What it does not do: it says *whether* two parties saw the same multiset, not *what* differs;
the JSON report's findings and offsets say that.

**The report's digest** (:func:`report_digest`) covers what the replay *found* as well as what it
read: BLAKE2b-256 over a domain tag, the records digest above, the summary's facts (counts,
verdict, per producer and partition; not what the auditor could decrypt, which depends on its
key rather than on the topic) and every finding, each as canonical JSON with its length, in the
report's order (a replay's order is deterministic), then their number. So two reports that agree
on the records but disagree on a finding, a count or the verdict never share a digest, and a
report whose findings were edited no longer matches the digest it states. The records digest
alone is still what a force compares with (it can compute it from its store; it has no findings).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ACC_BITS = 4096
ACC_BYTES = ACC_BITS // 8
_MASK = (1 << ACC_BITS) - 1
_ITEM_AUTHENTIC = b"intelbus/audit/digest/v1/record\x00"
_ITEM_RAW = b"intelbus/audit/digest/v1/raw\x00"
_FINAL = b"intelbus/audit/digest/v1/final\x00"
_RAW_PERSON = b"ibus-audit-raw"
_REPORT = b"intelbus/audit/report-digest/v1\x00"
_REPORT_PERSON = b"ibus-audit-rep"


def _expand(data: bytes) -> int:
    return int.from_bytes(hashlib.shake_256(data).digest(ACC_BYTES), "little")


def authentic_item(record_id: bytes, record_digest: bytes) -> int:
    """The item of an authentic record: its 16-byte id and 32-byte record digest."""
    if len(record_id) != 16 or len(record_digest) != 32:
        raise ValueError("a record id is 16 bytes and a record digest 32 bytes")
    return _expand(_ITEM_AUTHENTIC + record_id + record_digest)


def raw_item(raw: bytes) -> int:
    """The item of a record that did not verify: a hash of every byte read."""
    return _expand(_ITEM_RAW + hashlib.blake2b(raw, digest_size=32, person=_RAW_PERSON).digest())


@dataclass(slots=True)
class TopicDigest:
    """A running multiset digest: a count and a sum modulo 2^4096 (512 bytes of state)."""

    topic: str
    count: int = 0
    total: int = 0

    def add_item(self, item: int) -> None:
        self.count += 1
        # Reduced lazily: Python integers grow by one bit per doubling of the count.
        self.total += item

    def add_sum(self, count: int, total: int) -> None:
        """Add ``count`` items whose sum is ``total`` (summed elsewhere, e.g. by a worker)."""
        self.count += count
        self.total += total

    def add_authentic(self, record_id: bytes, record_digest: bytes) -> None:
        self.add_item(authentic_item(record_id, record_digest))

    def add_raw(self, raw: bytes) -> None:
        self.add_item(raw_item(raw))

    def merge(self, other: TopicDigest) -> None:
        """Add another partial digest of the same topic (e.g. one per reader)."""
        if other.topic != self.topic:
            raise ValueError("digests of different topics do not combine")
        self.count += other.count
        self.total += other.total

    @property
    def accumulator(self) -> bytes:
        return (self.total & _MASK).to_bytes(ACC_BYTES, "little")

    def hexdigest(self) -> str:
        """The value to print and compare (64 hex characters)."""
        topic = self.topic.encode("ascii")
        h = hashlib.blake2b(digest_size=32)
        h.update(_FINAL)
        h.update(len(topic).to_bytes(1, "big") + topic)
        h.update(self.count.to_bytes(8, "big"))
        h.update(self.accumulator)
        return h.hexdigest()

    def to_json(self) -> dict[str, object]:
        """The state (for checkpoints) and the value."""
        return {
            "topic": self.topic,
            "count": self.count,
            "accumulator": self.accumulator.hex(),
            "value": self.hexdigest(),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> TopicDigest:
        """Restore from :meth:`to_json` (the value is recomputed and must match).

        Raises:
            ValueError: malformed, or the value does not match the state.
        """
        acc = bytes.fromhex(str(data["accumulator"]))
        if len(acc) != ACC_BYTES:
            raise ValueError("digest accumulator has the wrong length")
        count = data["count"]
        if not isinstance(count, int) or count < 0:
            raise ValueError("digest count must be a non-negative integer")
        out = cls(str(data["topic"]), count, int.from_bytes(acc, "little"))
        if "value" in data and data["value"] != out.hexdigest():
            raise ValueError("digest value does not match its state")
        return out


def canonical(obj: object) -> bytes:
    """The canonical JSON bytes of a report's part (sorted keys, no spaces, ASCII)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def report_digest(
    records: str, facts: Mapping[str, Any], findings: Iterable[Mapping[str, Any]]
) -> str:
    """The report's digest: the records digest, the summary's facts and every finding, in order.

    Raises:
        ValueError: ``records`` is not a 64-hex-character digest.
    """
    records_bytes = bytes.fromhex(records)
    if len(records_bytes) != 32:
        raise ValueError("the records digest is 32 bytes")
    h = hashlib.blake2b(digest_size=32, person=_REPORT_PERSON)
    h.update(_REPORT + records_bytes)
    part = canonical(dict(facts))
    h.update(len(part).to_bytes(8, "big") + part)
    n = 0
    for finding in findings:
        # Length-prefixed, so no run of findings can be re-cut into another run.
        part = canonical(dict(finding))
        h.update(len(part).to_bytes(8, "big") + part)
        n += 1
    h.update(n.to_bytes(8, "big"))
    return h.hexdigest()
