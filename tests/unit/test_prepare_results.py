"""What crosses the prepare workers' pipes (consumers/prepare_pool.py): the envelope's dataclasses
pickled by field values in multiprocessing's pickler come back equal, field for field and type
for type; plain pickle is left as it was; a result rebuilt in the consumer is the Prepared the
worker made."""

from __future__ import annotations

import copyreg
import json
import pickle
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import pytest

from consumers import prepare_pool
from consumers.pipeline import RawRecord
from intelbus.envelope import parse
from intelbus.envelope.verify import VerifiedRecord
from intelbus.envelope.wire import SealedRecord
from intelbus.identity import AgencyIdentity
from intelbus.trust.model import Claim, Prepared

VECTORS = Path(__file__).parents[1] / "vectors"
RECORDS = [
    bytes.fromhex(v["expected_record"])
    for n in (1, 2, 3)
    for v in json.loads((VECTORS / f"envelope_v{n}.json").read_text())["positive"]
]
SIGNER = AgencyIdentity.generate("cst").public


def _types(value: object) -> object:
    if isinstance(value, tuple):
        return tuple(_types(v) for v in value)
    if is_dataclass(value):
        return (type(value), tuple(_types(getattr(value, f.name)) for f in fields(value)))
    return type(value)


def _through_the_pipe(value: object) -> object:
    return pickle.loads(ForkingPickler.dumps(value))  # noqa: S301 - our own bytes


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: f"v{r[4]}-{len(r)}")
def test_a_verified_record_crosses_the_pipe_unchanged(record: bytes) -> None:
    verified = VerifiedRecord(parse(record), SIGNER, bytes(range(32)))
    back = _through_the_pipe(verified)
    assert back == verified
    assert _types(back) == _types(verified)
    assert back.header.recipients == verified.header.recipients  # wrapped keys included


def test_the_pipe_form_is_by_fields_and_plain_pickle_is_untouched() -> None:
    sealed = parse(RECORDS[-1])
    assert SealedRecord in ForkingPickler._extra_reducers
    assert SealedRecord not in copyreg.dispatch_table
    # multiprocessing's form is the class and its field values, in order.
    reduce = ForkingPickler._extra_reducers[SealedRecord]
    assert reduce(sealed) == (SealedRecord, tuple(getattr(sealed, f.name) for f in fields(sealed)))
    assert pickle.loads(pickle.dumps(sealed)) == sealed  # noqa: S301


def test_a_result_is_rebuilt_into_the_prepared_the_worker_made() -> None:
    record = RECORDS[0]
    raw = RawRecord("t", 0, 5, record, datetime.now(UTC))
    verified = VerifiedRecord(parse(record), SIGNER, bytes(32))
    made = Prepared(raw.position, record, verified, addressed=True, claim=Claim("x", "y", 1))
    result = _through_the_pipe(prepare_pool._compact(made))
    assert prepare_pool._rebuild(raw, result) == made  # type: ignore[arg-type]
