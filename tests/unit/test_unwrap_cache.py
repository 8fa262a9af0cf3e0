"""The consumer's cache of unwrapped data keys: same results, fewer sealed-box opens, bounded."""

from __future__ import annotations

import pytest

from intelbus import _nacl
from intelbus.envelope import DataKeyCache, open_record, seal, verify
from intelbus.envelope.unseal import UnwrapCache
from intelbus.errors import DecryptionFailed
from intelbus.identity import AgencyIdentity, StaticKeyRing
from intelbus.kinds import RecordKind

ENV, TOPIC = "test", "intelbus.sightings"


class CountingIdentity(AgencyIdentity):
    """An identity that counts how often it opens a sealed box."""

    opens = 0

    def open_sealed(self, sealed: bytes) -> bytes:
        type(self).opens += 1
        return super().open_sealed(sealed)


def _records(producer: AgencyIdentity, reader: AgencyIdentity, n: int, datakeys: DataKeyCache):
    ring = StaticKeyRing([producer.public])
    out = []
    for i in range(n):
        sealed = seal(
            producer,
            environment=ENV,
            topic=TOPIC,
            kind=RecordKind.SIGHTING,
            sequence=i,
            prev_digest=bytes(32),
            schema_fingerprint=bytes(32),
            payload=f"payload {i}".encode(),
            recipients=[reader.public],
            datakeys=datakeys,
            partition=0,
        )
        out.append(
            verify(
                sealed.data,
                ring,
                expected_environment=ENV,
                expected_topic=TOPIC,
                expected_partition=0,
                witnessed_at=None,
            )
        )
    return out


@pytest.fixture
def reader() -> CountingIdentity:
    CountingIdentity.opens = 0
    return CountingIdentity("herts-police", _nacl.random_bytes(32), _nacl.random_bytes(32))


def test_a_reused_data_key_is_unwrapped_once(reader: CountingIdentity) -> None:
    producer = AgencyIdentity.generate("cst")
    records = _records(producer, reader, 20, DataKeyCache())
    cache = UnwrapCache(reader)
    opened = [open_record(r, reader, cache) for r in records]
    assert opened == [f"payload {i}".encode() for i in range(20)]
    assert CountingIdentity.opens == 1
    # Without the cache every record opens its wrap again.
    assert [open_record(r, reader) for r in records] == opened
    assert CountingIdentity.opens == 21


def test_the_cache_is_bounded_and_least_recently_used_goes_first(reader: CountingIdentity) -> None:
    producer = AgencyIdentity.generate("cst")
    # No data-key reuse: every record has its own wrap.
    records = [_records(producer, reader, 1, DataKeyCache(max_uses=1))[0] for _ in range(3)]
    cache = UnwrapCache(reader, capacity=2)
    for r in records:
        open_record(r, reader, cache)
    assert CountingIdentity.opens == 3
    open_record(records[2], reader, cache)  # still cached
    assert CountingIdentity.opens == 3
    open_record(records[0], reader, cache)  # evicted: opened again
    assert CountingIdentity.opens == 4
    assert "key" not in repr(cache).lower().replace("unwrapcache", "")


def test_a_wrap_that_does_not_open_is_never_cached(reader: CountingIdentity) -> None:
    cache = UnwrapCache(reader)
    bogus = _nacl.random_bytes(80)
    for _ in range(2):
        with pytest.raises(DecryptionFailed):
            cache.open(bogus)
    assert CountingIdentity.opens == 2
