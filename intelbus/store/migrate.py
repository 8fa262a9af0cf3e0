"""Migrating a store made by an earlier intelbus (schema 1 or 2) to schema 3, in place, in one
transaction: nothing is lost, and a failure leaves the old store exactly as it was.

Schema 3 identifies a record by (producer, record id), keeps every version of it, keys stream
heads by partition and key epoch, and keeps a bounded prefix of quarantined bytes. What older
stores did not record is filled in honestly, never invented:

* **Versions.** An old record's history rows become its earlier versions: version 1 the original,
  each later one the correction or retraction that made it. Their labels and policy decision are
  the record's current ones (older stores kept no per-version decision); the signing key of old
  versions is unknown (NULL), so a later key withdrawal cannot reach them.
* **Superseded** records (a correction whose content the policy withheld) become ``withheld``:
  the correction whose content was withheld (``new_payload`` NULL in the amendments table; for a
  correction missing there, the last one) is recorded as withheld, and the other versions keep
  their content, so a record corrected again after that is live with its newest content.
* **Receipts** (the ``withheld`` table) become records with no content, of the kind their topic's
  family carries. Receipts of heartbeats carried nothing and are dropped; receipts of amendments
  already in the amendments table are not duplicated.
* **Stream heads** become the legacy topic-wide heads of format v1 streams (partition -1, epoch
  ``v1``): v1 records go on being judged against them exactly as before.
* **Quarantine rows** keep the first :data:`~intelbus.trust.judge.QUARANTINE_PREFIX_BYTES` bytes,
  with the whole record's size and BLAKE2b-256 digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from intelbus.chain import ANY_PARTITION, LEGACY_EPOCH
from intelbus.kinds import FAMILY_CONTENT, family_of_topic
from intelbus.trust.judge import QUARANTINE_PREFIX_BYTES
from intelbus.trust.model import Change, Labels, Outcome, VersionDecision
from intelbus.trust.versions import VersionRow, fold

if TYPE_CHECKING:
    from intelbus.store.base import Cursor, SqlStore

#: The tables schema 3 replaces (offsets and feeds keep their layout).
LEGACY_TABLES = ("records", "record_history", "withheld", "quarantine", "amendments", "chain")
_PAGE = 500


def copy_legacy(
    store: SqlStore,
    cur: Cursor,
    old: Callable[[str], str],
) -> dict[str, int]:
    """Copy every legacy row into the schema 3 tables (which must exist); returns counts.

    ``old(name)`` is the qualified name the backend moved a legacy table to.
    """
    counts = {"records": 0, "receipts": 0, "amendments": 0, "quarantine": 0, "chain": 0}
    now = store._enc_time(store._now())
    amendment_ids = {
        str(r[0]) for r in _rows(store, cur, f"SELECT amendment_record_id FROM {old('amendments')}")
    }
    # Corrections by id: True when the policy withheld their content (no new payload kept).
    withheld_corrections = {
        str(r[0]): bool(r[1])
        for r in _rows(
            store,
            cur,
            "SELECT amendment_record_id, new_payload IS NULL "
            f"FROM {old('amendments')} WHERE kind = 'correction'",
        )
    }
    for row in _pages(
        store,
        cur,
        "SELECT record_id, topic, kafka_partition, kafka_offset, producer_id, kind, sequence, "
        "digest, created_at, appended_at, policy_hash, rule_id, action, redacted_fields, tlp, "
        "classification, force_area, occurred_at, payload, version, retracted, superseded "
        f"FROM {old('records')} ORDER BY record_id",
    ):
        history = _rows(
            store,
            cur,
            f"SELECT version, payload, amendment_record_id, kind, at, reason "
            f"FROM {old('record_history')} WHERE record_id = ? ORDER BY version",
            (row[0],),
        )
        _copy_record(store, cur, row, history, now, withheld_corrections=withheld_corrections)
        counts["records"] += 1
    for row in _pages(
        store,
        cur,
        "SELECT record_id, topic, kafka_partition, kafka_offset, producer_id, digest, rule_id, "
        f"policy_hash, received_at FROM {old('withheld')} ORDER BY record_id",
    ):
        if _copy_receipt(store, cur, row, amendment_ids, now):
            counts["receipts"] += 1
    for row in _pages(
        store,
        cur,
        "SELECT amendment_record_id, kind, target_record_id, producer_id, at, reason, "
        f"new_payload, status, received_at, applied_at FROM {old('amendments')} ORDER BY arrival",
    ):
        _copy_amendment(store, cur, row)
        counts["amendments"] += 1
    for row in _pages(
        store,
        cur,
        "SELECT topic, kafka_partition, kafka_offset, raw, reason, message, record_id, "
        f"producer_id, quarantined_at FROM {old('quarantine')} "
        "ORDER BY topic, kafka_partition, kafka_offset",
    ):
        raw = bytes(row[3])
        store._exec(
            cur,
            "INSERT INTO quarantine (topic, kafka_partition, kafka_offset, raw_prefix, raw_size, "
            "raw_digest, reason, message, record_id, producer_id, authentic, quarantined_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row[0],
                row[1],
                row[2],
                raw[:QUARANTINE_PREFIX_BYTES],
                len(raw),
                hashlib.blake2b(raw, digest_size=32).digest(),
                row[4],
                row[5],
                row[6],
                row[7],
                False,
                row[8],
            ),
        )
        counts["quarantine"] += 1
    for producer, stream, seq, digest in _rows(
        store, cur, f"SELECT producer_id, stream, last_sequence, last_digest FROM {old('chain')}"
    ):
        store._exec(
            cur,
            "INSERT INTO chain (producer_id, topic, kafka_partition, epoch, last_sequence, "
            "last_digest, gaps, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                producer,
                stream,
                ANY_PARTITION,
                LEGACY_EPOCH,
                seq,
                bytes(digest),
                store._enc_json([]),
                now,
            ),
        )
        counts["chain"] += 1
    return counts


def _rows(
    store: SqlStore,
    cur: Cursor,
    sql: str,
    params: Sequence[object] = (),
) -> list[tuple[Any, ...]]:
    return list(store._exec(cur, sql, params).fetchall())


def _pages(store: SqlStore, cur: Cursor, sql: str) -> Iterator[tuple[Any, ...]]:
    """All rows of ``sql`` (which has ORDER BY), a page at a time, so memory stays bounded."""
    offset = 0
    while True:
        rows = _rows(store, cur, f"{sql} LIMIT {_PAGE} OFFSET {offset}")
        yield from rows
        if len(rows) < _PAGE:
            return
        offset += _PAGE


def _copy_record(
    store: SqlStore,
    cur: Cursor,
    row: tuple[Any, ...],
    history: list[tuple[Any, ...]],
    now: object,
    *,
    withheld_corrections: dict[str, bool],
) -> None:
    (rid, topic, partition, offset, producer, kind, sequence, digest, created, appended,
     policy_hash, rule_id, action, redacted, tlp, classification, force_area, occurred, payload,
     version, _retracted, superseded) = row  # fmt: skip
    dec_payload = store._dec_json(payload)
    labels = Labels(
        str(tlp),
        str(classification),
        None if force_area is None else str(force_area),
        None if occurred is None else store._dec_time(occurred),
    )
    redacted_fields = tuple(store._dec_json(redacted))
    outcome = Outcome.REDACT if str(action) == "redact" else Outcome.STORE

    def content(p: object) -> VersionDecision:
        return VersionDecision(outcome, str(rule_id), str(policy_hash), p, redacted_fields, labels)  # type: ignore[arg-type]

    payloads = {int(h[0]): store._dec_json(h[1]) for h in history}
    current_version = int(version)
    corrections = [int(h[0]) + 1 for h in history if str(h[3]) == "correction"]
    last_correction = max(corrections) if corrections else None
    versions: list[tuple[int, Change, str, VersionDecision, object, str]] = []
    versions.append((1, Change.ORIGINAL, str(rid), content(payloads.get(1, dec_payload)), None, ""))
    for h in history:
        v = int(h[0]) + 1
        change = Change(str(h[3]))
        if change is Change.RETRACTION:
            decision = VersionDecision(Outcome.RETRACT, "retraction", str(policy_hash))
        elif superseded and withheld_corrections.get(str(h[2]), v == last_correction):
            decision = VersionDecision(
                Outcome.WITHHOLD, str(rule_id), str(policy_hash), labels=labels
            )
        else:
            decision = content(payloads.get(v, dec_payload) if v < current_version else dec_payload)
        versions.append((v, change, str(h[2]), decision, h[4], str(h[5])))
    current = fold(VersionRow(v, c, d) for v, c, _, d, _, _ in versions)
    d = current.decision
    occurred_at = d.labels.occurred_at if d.labels is not None else None
    event_at = occurred_at if occurred_at is not None else store._dec_time(created)
    store._exec(
        cur,
        "INSERT INTO records (producer_id, record_id, kind, topic, kafka_partition, kafka_offset, "
        "sequence, digest, key_id, created_at, appended_at, status, version, content_version, "
        "policy_hash, rule_id, action, redacted_fields, tlp, classification, force_area, "
        "occurred_at, event_at, payload, stored_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            producer,
            rid,
            kind,
            topic,
            partition,
            offset,
            sequence,
            bytes(digest),
            None,
            created,
            appended,
            current.status.value,
            current.version,
            current.content_version,
            d.policy_hash,
            d.rule_id,
            d.outcome.value,
            store._enc_json(list(d.redacted_fields)),
            labels.tlp,
            labels.classification,
            labels.force_area,
            store._enc_time(labels.occurred_at),
            store._enc_time(event_at),
            store._opt_json(d.payload),
            now,
            now,
        ),
    )
    for v, change, source, decision, at, reason in versions:
        is_original = change is Change.ORIGINAL
        store._exec(
            cur,
            "INSERT INTO record_versions (producer_id, record_id, version, change, "
            "source_record_id, key_id, sequence, digest, topic, kafka_partition, kafka_offset, "
            "created_at, appended_at, amended_at, reason, outcome, rule_id, policy_hash, "
            "redacted_fields, tlp, classification, force_area, occurred_at, payload, withdrawn, "
            "recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                producer,
                rid,
                v,
                change.value,
                source,
                None,
                sequence if is_original else None,
                bytes(digest) if is_original else None,
                topic,
                partition if is_original else None,
                offset if is_original else None,
                created if is_original else None,
                appended if is_original else None,
                at,
                reason,
                *store._decision_params(decision),
                False,
                now,
            ),
        )


def _copy_receipt(
    store: SqlStore,
    cur: Cursor,
    row: tuple[Any, ...],
    amendment_ids: set[str],
    now: object,
) -> bool:
    rid, topic, partition, offset, producer, digest, rule_id, policy_hash, received = row
    family = family_of_topic(str(topic))
    kind = FAMILY_CONTENT.get(family) if family is not None else None
    if kind is None or str(rid) in amendment_ids:
        return False  # a heartbeat's receipt, or an amendment's (already registered)
    decision = VersionDecision(Outcome.WITHHOLD, str(rule_id), str(policy_hash))
    store._exec(
        cur,
        "INSERT INTO records (producer_id, record_id, kind, topic, kafka_partition, kafka_offset, "
        "sequence, digest, key_id, created_at, appended_at, status, version, content_version, "
        "policy_hash, rule_id, action, redacted_fields, tlp, classification, force_area, "
        "occurred_at, event_at, payload, stored_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'withheld', 1, 1, ?, ?, 'withhold', ?, NULL, "
        "NULL, NULL, NULL, ?, NULL, ?, ?) ON CONFLICT (producer_id, record_id) DO NOTHING",
        (
            producer,
            rid,
            kind.label,
            topic,
            partition,
            offset,
            -1,
            bytes(digest),
            None,
            received,
            received,
            policy_hash,
            rule_id,
            store._enc_json([]),
            received,
            now,
            now,
        ),
    )
    store._exec(
        cur,
        "INSERT INTO record_versions (producer_id, record_id, version, change, source_record_id, "
        "key_id, sequence, digest, topic, kafka_partition, kafka_offset, created_at, "
        "appended_at, amended_at, reason, outcome, rule_id, policy_hash, redacted_fields, tlp, "
        "classification, force_area, occurred_at, payload, withdrawn, recorded_at) "
        "VALUES (?, ?, 1, 'original', ?, NULL, NULL, ?, ?, ?, ?, ?, ?, NULL, '', ?, ?, ?, ?, ?, "
        "?, ?, ?, ?, ?, ?) ON CONFLICT (producer_id, record_id, version) DO NOTHING",
        (
            producer,
            rid,
            rid,
            bytes(digest),
            topic,
            partition,
            offset,
            received,
            received,
            *store._decision_params(decision),
            False,
            now,
        ),
    )
    return True


def _copy_amendment(store: SqlStore, cur: Cursor, row: tuple[Any, ...]) -> None:
    rid, kind, target, producer, at, reason, new_payload, status, received, applied = row
    if str(kind) == "retraction":
        decision = VersionDecision(Outcome.RETRACT, "retraction", "")
    elif new_payload is None:
        decision = VersionDecision(Outcome.WITHHOLD, "legacy", "")
    else:
        decision = VersionDecision(Outcome.STORE, "legacy", "", store._dec_json(new_payload))
    store._exec(
        cur,
        "INSERT INTO amendments (producer_id, amendment_record_id, kind, target_record_id, "
        "status, key_id, sequence, digest, topic, kafka_partition, kafka_offset, created_at, "
        "appended_at, amended_at, reason, replacement_kind, outcome, rule_id, policy_hash, "
        "redacted_fields, tlp, classification, force_area, occurred_at, payload, received_at, "
        "applied_at) VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, NULL, ?, ?, ?, ?, NULL, "
        "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            producer,
            rid,
            kind,
            target,
            status,
            received,
            received,
            at,
            reason,
            *store._decision_params(decision),
            received,
            applied,
        ),
    )
