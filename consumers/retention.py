"""Retention for a consumer's store (issue 16): which payloads are past their limit, and pruning
them to tombstones.

The policy's ``[retention]`` section (intelbus/policy/retention.py, pure) decides each record's
review date and limit from the labels the store keeps; this module walks the store, asks it for
every record that still holds anything, and hands the expired ones to :meth:`Store.prune`, which
keeps a tombstone for each (ids, producer, digest, dates, rule). Run by ``intelbus store prune``
and, on a schedule, by the running consumer (:data:`PRUNE_EVERY_S`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from intelbus.log import get_logger
from intelbus.policy.retention import RetentionDecision, expired, retention_for, review_due
from intelbus.policy.rules import SharingPolicy
from intelbus.store.base import Expiry, RetentionCandidate, Store

log = get_logger("consumers.retention")

#: How often a running consumer prunes its store (seconds): hourly is fine-grained enough for
#: limits counted in days, and one walk of the store per hour costs little.
PRUNE_EVERY_S = 3600.0
#: Records pruned per store transaction (a long prune never holds the writer lock for long).
PRUNE_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Due:
    """One record and what retention says of it at a time."""

    candidate: RetentionCandidate
    decision: RetentionDecision


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What a prune found and did at ``as_of``."""

    as_of: datetime
    checked: int
    expired: tuple[Due, ...]
    review_due: tuple[Due, ...]
    pruned: int


def decide(policy: SharingPolicy, candidate: RetentionCandidate) -> RetentionDecision:
    """The retention decision for one stored record under ``policy``."""
    return retention_for(
        policy,
        kind=candidate.kind,
        tlp=candidate.tlp,
        handling_code=candidate.handling_code,
        classification=candidate.classification,
        force_area=candidate.force_area,
        occurred_at=candidate.event_at,
        stored_at=candidate.stored_at,
    )


def survey(
    policy: SharingPolicy, candidates: Iterable[RetentionCandidate], now: datetime
) -> tuple[int, list[Due], list[Due]]:
    """(records checked, those past their limit, those past their review date only)."""
    checked = 0
    gone: list[Due] = []
    review: list[Due] = []
    for c in candidates:
        checked += 1
        d = decide(policy, c)
        if expired(d, now):
            gone.append(Due(c, d))
        elif review_due(d, now):
            review.append(Due(c, d))
    return checked, gone, review


def prune(
    store: Store, policy: SharingPolicy, now: datetime, *, dry_run: bool = False
) -> PruneResult:
    """Prune every record of ``store`` past its retention limit at ``now`` (unless ``dry_run``).

    Raises:
        StoreError: a chunk could not be committed (the chunks before it stand: each is whole).
    """
    checked, gone, review = survey(policy, store.retention_candidates(), now)
    pruned = 0
    if not dry_run:
        for i in range(0, len(gone), PRUNE_CHUNK):
            chunk = gone[i : i + PRUNE_CHUNK]
            pruned += store.prune(
                [
                    Expiry(
                        d.candidate.producer_id,
                        d.candidate.record_id,
                        d.decision.rule_id,
                        d.decision.keep_until,
                    )
                    for d in chunk
                ]
            )
    log.info(
        "store.retention",
        checked=checked,
        expired=len(gone),
        pruned=pruned,
        review_due=len(review),
        dry_run=dry_run,
    )
    return PruneResult(now, checked, tuple(gone), tuple(review), pruned)
