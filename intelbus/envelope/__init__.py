"""The sealed-record envelope: the signed, encrypted wire format of every record (docs/envelope.md).

* ``wire``: the byte layout; the only code that reads unverified bytes.
* ``seal``: encrypt to the recipients, bind the header, sign.
* ``verify``: check size, layout, key, signature and bindings with public keys only (auditors).
* ``unseal``: a recipient opens a verified record.
* ``datakey``: data keys, their wrapping, and their bounded reuse window.
"""

from intelbus.envelope.datakey import DataKey, DataKeyCache
from intelbus.envelope.seal import Sealed, seal
from intelbus.envelope.unseal import open_record
from intelbus.envelope.verify import VerifiedRecord, record_digest, verify
from intelbus.envelope.wire import (
    MAX_RECIPIENTS,
    MAX_RECORD_BYTES,
    EnvelopeHeader,
    RecipientEntry,
    SealedRecord,
    parse,
)
from intelbus.kinds import RecordKind

__all__ = [
    "MAX_RECIPIENTS",
    "MAX_RECORD_BYTES",
    "DataKey",
    "DataKeyCache",
    "EnvelopeHeader",
    "RecipientEntry",
    "RecordKind",
    "Sealed",
    "SealedRecord",
    "VerifiedRecord",
    "open_record",
    "parse",
    "record_digest",
    "seal",
    "verify",
]
