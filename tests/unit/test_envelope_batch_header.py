"""Sealing a batch encodes the parts its records share once: the bytes must be exactly what
``encode_header`` gives each record alone, and every check ``encode_header`` makes must still
refuse a bad field, wherever in the batch it sits."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import nacl.bindings
import pytest

from intelbus import _nacl
from intelbus.envelope import merkle
from intelbus.envelope.datakey import DataKey, DataKeyCache, new_data_key, wrap_data_key
from intelbus.envelope.seal import BatchItem, Sealed, _seal_batch_from_parts
from intelbus.envelope.wire import (
    FORMAT_V3,
    MAX_BATCH,
    MAX_FINGERPRINT_BYTES,
    MAX_ID_BYTES,
    MAX_PARTITION,
    MAX_RECIPIENTS,
    MAX_SEQUENCE,
    MAX_TOPIC_BYTES,
    BatchProof,
    aead_prefix,
    encode_header,
    encode_trailer,
    encode_trailers,
    parse,
)
from intelbus.errors import OversizeEnvelope
from intelbus.identity import AgencyIdentity, PublicIdentity
from intelbus.kinds import RecordKind


def _ident(agency: str) -> AgencyIdentity:
    seed = _nacl.blake2b(agency.encode(), digest_size=32)
    return AgencyIdentity(agency, seed, _nacl.blake2b(seed, digest_size=32))


SIGNER = _ident("cst")
READERS = [_ident(f"force-{i:02d}").public for i in range(6)]
NOW = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _items(
    rng: random.Random, size: int, keysets: list[tuple[PublicIdentity, ...]]
) -> tuple[list[BatchItem], list[DataKey]]:
    """A batch whose items vary every per-record field, and change schema fingerprint and
    recipient set (and data key) in runs, as a publisher's batch may."""
    items: list[BatchItem] = []
    data_keys: list[DataKey] = []
    keys = rng.choice(keysets)
    data_key = new_data_key(keys)
    fingerprint = rng.randbytes(rng.randint(1, MAX_FINGERPRINT_BYTES))
    for index in range(size):
        roll = rng.random()
        if roll < 0.15:  # a new recipient set, with its own data key
            keys = rng.choice(keysets)
            data_key = new_data_key(keys)
        elif roll < 0.25:  # the same set, a new data key (the reuse window ended)
            data_key = new_data_key(keys)
        elif roll < 0.35:  # the same keys in a new tuple: checked again, same bytes
            keys = tuple([*keys])  # noqa: C409 - a new tuple object, on purpose
        if rng.random() < 0.15:
            fingerprint = rng.randbytes(rng.randint(1, MAX_FINGERPRINT_BYTES))
        items.append(
            BatchItem(
                kind=rng.choice(list(RecordKind)),
                sequence=rng.choice([0, 1, MAX_SEQUENCE, rng.randrange(MAX_SEQUENCE)]),
                prev_digest=rng.randbytes(32) if index == 0 or rng.random() < 0.2 else None,
                schema_fingerprint=fingerprint,
                payload=rng.randbytes(rng.randint(0, 600)),
                recipients=keys,
                target_record_id=uuid.UUID(bytes=rng.randbytes(16)) if rng.random() < 0.3 else None,
                record_id=uuid.UUID(bytes=rng.randbytes(16)) if rng.random() < 0.8 else None,
            )
        )
        data_keys.append(data_key)
    return items, data_keys


def _seal(
    items: list[BatchItem],
    data_keys: list[DataKey],
    *,
    environment: str = "test",
    topic: str = "intelbus.sightings",
    partition: int = 0,
    times: list[datetime] | None = None,
) -> list[Sealed]:
    return _seal_batch_from_parts(
        SIGNER,
        items,
        environment=environment,
        topic=topic,
        partition=partition,
        data_keys=data_keys,
        nonces=[_nacl.random_bytes(24) for _ in items],
        times=times if times is not None else [NOW] * len(items),
    )


@pytest.mark.parametrize("seed", range(40))
def test_batch_headers_are_byte_for_byte_encode_header(seed: int) -> None:
    rng = random.Random(seed)
    keysets = [tuple(rng.sample(READERS, rng.randint(1, len(READERS)))) for _ in range(4)]
    size = rng.choice([1, 2, 3, rng.randint(4, MAX_BATCH - 1), MAX_BATCH])
    items, data_keys = _items(rng, size, keysets)
    environment = rng.choice(["test", "e" * MAX_ID_BYTES, "prod.uk-1_a"])
    topic = rng.choice(["intelbus.sightings", "t" * MAX_TOPIC_BYTES, "a"])
    partition = rng.choice([0, 1, MAX_PARTITION, rng.randrange(MAX_PARTITION)])
    # One time per batch (as seal_batch draws it), or one per record (as the parts allow).
    times = (
        [NOW] * size
        if seed % 2
        else [NOW + timedelta(microseconds=rng.randrange(10**9)) for _ in range(size)]
    )
    sealed = _seal(
        items, data_keys, environment=environment, topic=topic, partition=partition, times=times
    )
    for item, data_key, s in zip(items, data_keys, sealed, strict=True):
        alone = encode_header(s.header)  # the reference: one record, every check
        parsed = parse(s.data)
        assert parsed.header_bytes == alone
        assert parsed.header == s.header
        assert s.header.recipients == data_key.wraps
        assert s.header.schema_fingerprint == item.schema_fingerprint
        assert s.header.environment == environment
        assert s.header.topic == topic
        assert s.header.partition == partition
        # The ciphertext was made under exactly those header bytes.
        assert (
            _nacl.aead_decrypt(
                data_key.key, parsed.nonce, parsed.ciphertext, aead_prefix(FORMAT_V3) + alone
            )
            == item.payload
        )


def _batch(size: int = 5) -> tuple[list[BatchItem], list[DataKey]]:
    keys = tuple(READERS[:3])
    data_key = new_data_key(keys)
    items = [
        BatchItem(
            kind=RecordKind.SIGHTING,
            sequence=i,
            prev_digest=bytes(32) if i == 0 else None,
            schema_fingerprint=b"fp",
            payload=b"x",
            recipients=keys,
        )
        for i in range(size)
    ]
    return items, [data_key] * size


def test_runs_of_shared_parts_switch_back_and_forth() -> None:
    """Schema and data key change independently, and come back: each record still gets its own."""
    keys_a, keys_b = tuple(READERS[:2]), tuple(READERS[2:5])
    dk_a, dk_b = new_data_key(keys_a), new_data_key(keys_b)
    plan = [
        (b"fpA", keys_a, dk_a),
        (b"fpA", keys_a, dk_a),
        (b"fpB", keys_a, dk_a),
        (b"fpB", keys_b, dk_b),
        (b"fpA", keys_b, dk_b),
        (b"fpA", keys_a, dk_a),
        (b"fpB", keys_a, new_data_key(keys_a)),
    ]
    items = [
        BatchItem(RecordKind.INCIDENT, i, bytes(32) if i == 0 else None, fp, b"p", keys)
        for i, (fp, keys, _) in enumerate(plan)
    ]
    sealed = _seal(items, [dk for _, _, dk in plan])
    for (fp, _, dk), s in zip(plan, sealed, strict=True):
        assert parse(s.data).header_bytes == encode_header(s.header)
        assert s.header.schema_fingerprint == fp
        assert s.header.recipients == dk.wraps


@pytest.mark.parametrize("where", [0, 3])
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sequence": MAX_SEQUENCE + 1}, "sequence"),
        ({"sequence": -1}, "sequence"),
        ({"schema_fingerprint": b""}, "fingerprint"),
        ({"schema_fingerprint": bytes(MAX_FINGERPRINT_BYTES + 1)}, "fingerprint"),
        ({"target_record_id": uuid.UUID(int=0)}, "nil UUID"),
        ({"prev_digest": bytes(31)}, "prev_digest"),
        ({"recipients": tuple(READERS[:2])}, "not wrapped for this recipient set"),
    ],
)
def test_a_bad_field_anywhere_in_the_batch_is_refused(
    where: int, change: dict[str, object], message: str
) -> None:
    items, data_keys = _batch()
    items[where] = replace(items[where], **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        _seal(items, data_keys)


@pytest.mark.parametrize("where", [0, 3])
def test_a_bad_data_key_anywhere_in_the_batch_is_refused(where: int) -> None:
    items, data_keys = _batch()
    good = data_keys[0]
    # Unsorted wraps, and a wrapped key of the wrong length: encode_header refuses both.
    for wraps, message in (
        # (The wraps-match-recipients check refuses unsorted wraps first.)
        (tuple(reversed(good.wraps)), "not wrapped for this recipient set"),
        ((replace(good.wraps[0], wrapped_key=b"k"),), "wrong length"),
    ):
        bad = DataKey(good.key, wraps)
        keyed = list(data_keys)
        keyed[where] = bad
        batch = list(items)
        batch[where] = replace(
            batch[where], recipients=tuple(READERS[:3]) if len(wraps) > 1 else (READERS[0],)
        )
        with pytest.raises(ValueError, match=message):
            _seal(batch, keyed)


def test_too_many_recipients_is_oversize() -> None:
    readers = tuple(
        sorted(
            (_ident(f"r{i:02d}").public for i in range(MAX_RECIPIENTS + 1)),
            key=lambda r: r.agency_id,
        )
    )
    data_key = wrap_data_key(bytes(32), readers)
    item = BatchItem(RecordKind.SIGHTING, 0, bytes(32), b"fp", b"x", readers)
    with pytest.raises(OversizeEnvelope):
        _seal([item], [data_key])


@pytest.mark.parametrize(
    ("environment", "topic", "partition"),
    [
        ("", "intelbus.sightings", 0),
        ("bad env", "intelbus.sightings", 0),
        ("e" * (MAX_ID_BYTES + 1), "intelbus.sightings", 0),
        ("test", "t" * (MAX_TOPIC_BYTES + 1), 0),
        ("test", "t/opic", 0),
        ("test", "intelbus.sightings", MAX_PARTITION + 1),
        ("test", "intelbus.sightings", -1),
    ],
)
def test_bad_stream_ids_or_partition_are_refused(
    environment: str, topic: str, partition: int
) -> None:
    items, data_keys = _batch()
    with pytest.raises(ValueError, match=r"environment|topic|partition"):
        _seal(items, data_keys, environment=environment, topic=topic, partition=partition)


def test_a_naive_or_pre_epoch_time_is_refused_wherever_it_is() -> None:
    items, data_keys = _batch()
    naive = [NOW] * 4 + [datetime(2024, 5, 1)]  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="naive"):
        _seal(items, data_keys, times=naive)
    early = [NOW] * 4 + [datetime(1969, 12, 31, tzinfo=UTC)]
    with pytest.raises(ValueError, match="before the Unix epoch"):
        _seal(items, data_keys, times=early)


def test_aead_encrypt_is_pynacls_byte_for_byte() -> None:
    rng = random.Random(7)
    for length in (0, 1, 15, 16, 17, 300, 4096):
        key, nonce = rng.randbytes(32), rng.randbytes(24)
        plaintext, associated = rng.randbytes(length), rng.randbytes(rng.randint(0, 500))
        ours = _nacl.aead_encrypt(key, nonce, plaintext, associated)
        assert ours == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, associated, nonce, key
        )
        assert _nacl.aead_decrypt(key, nonce, ours, associated) == plaintext


@pytest.mark.parametrize(
    ("key", "nonce", "plaintext", "associated"),
    [
        (bytes(31), bytes(24), b"m", b"a"),
        (bytes(32), bytes(23), b"m", b"a"),
        (bytes(32), bytes(24), "m", b"a"),
    ],
)
def test_aead_encrypt_refuses_what_pynacl_refuses(
    key: object, nonce: object, plaintext: object, associated: object
) -> None:
    with pytest.raises(TypeError):
        _nacl.aead_encrypt(key, nonce, plaintext, associated)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", range(1, MAX_BATCH + 1))
def test_all_paths_at_once_are_each_paths(size: int) -> None:
    tree = merkle.levels([_nacl.blake2b(bytes([i])) for i in range(size)])
    signature = bytes(range(64))
    paths = merkle.paths_from_levels(tree)
    assert paths == [merkle.path_from_levels(tree, i) for i in range(size)]
    assert encode_trailers(size, paths, signature) == [
        encode_trailer(BatchProof(size, i, p), signature) for i, p in enumerate(paths)
    ]


def test_encode_trailers_refuses_what_encode_trailer_refuses() -> None:
    tree = merkle.levels([_nacl.blake2b(bytes([i])) for i in range(5)])
    paths = merkle.paths_from_levels(tree)
    signature = bytes(64)
    with pytest.raises(ValueError, match="signature"):
        encode_trailers(5, paths, bytes(63))
    with pytest.raises(ValueError, match="one inclusion path per record"):
        encode_trailers(4, paths, signature)
    with pytest.raises(ValueError, match="a batch holds"):
        encode_trailers(MAX_BATCH + 1, paths, signature)
    short = [*paths[:2], paths[2][:-1], *paths[3:]]
    with pytest.raises(ValueError, match="length its index and size give"):
        encode_trailers(5, short, signature)
    bad_hash = [*paths[:1], (paths[1][0][:31], *paths[1][1:]), *paths[2:]]
    with pytest.raises(ValueError, match="32 bytes"):
        encode_trailers(5, bad_hash, signature)


def test_the_data_key_cache_reads_a_changed_list_again() -> None:
    cache = DataKeyCache()
    recipients = [READERS[0], READERS[1]]
    first = cache.get(recipients)
    recipients.append(READERS[2])  # the same list object, now another recipient set
    second = cache.get(recipients)
    assert [w.agency_id for w in second.wraps] == [r.agency_id for r in READERS[:3]]
    assert second is not first
    keys = tuple(READERS[:2])
    assert cache.get(keys) is first  # the same set as a tuple: the same (reused) data key
    assert cache.get(keys) is first
