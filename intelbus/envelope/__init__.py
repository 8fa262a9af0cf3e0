"""The sealed-record envelope: the signed, encrypted wire format of every record (docs/envelope.md).

* ``wire``: the byte layout; the only code that reads unverified bytes.
* ``seal``: encrypt to the recipients, bind the header, sign (format 3: a batch with one signature).
* ``merkle``: RFC 9162 Merkle tree hashes and inclusion proofs (format 3's batch signatures).
* ``verify``: check size, layout, key, signature and bindings with public keys only (auditors).
* ``unseal``: a recipient opens a verified record.
* ``datakey``: data keys, their wrapping, and their bounded reuse window.
"""

from intelbus.envelope.datakey import DataKey, DataKeyCache
from intelbus.envelope.seal import BatchItem, Sealed, seal, seal_batch
from intelbus.envelope.unseal import open_record
from intelbus.envelope.verify import RootCache, VerifiedRecord, record_digest, verify
from intelbus.envelope.wire import (
    MAX_BATCH,
    MAX_RECIPIENTS,
    MAX_RECORD_BYTES,
    EnvelopeHeader,
    RecipientEntry,
    SealedRecord,
    parse,
)
from intelbus.kinds import RecordKind

__all__ = [
    "MAX_BATCH",
    "MAX_RECIPIENTS",
    "MAX_RECORD_BYTES",
    "BatchItem",
    "DataKey",
    "DataKeyCache",
    "EnvelopeHeader",
    "RecipientEntry",
    "RecordKind",
    "RootCache",
    "Sealed",
    "SealedRecord",
    "VerifiedRecord",
    "open_record",
    "parse",
    "record_digest",
    "seal",
    "seal_batch",
    "verify",
]
