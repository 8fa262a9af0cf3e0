"""Micro-benchmark of the envelope: seal, verify and open rates, against the primitives' floor.

Not a test. Prints, per record, the median of 5 repetitions for 1, 3 and 10 recipients, sealing
with and without data-key reuse, and the floor measured in the same run: one Ed25519 signature and
verification, one sealed box (seal and open of a 32-byte data key), one XChaCha20-Poly1305 of the
same payload size. Ratios compare each envelope operation with the sum of the primitives it must
do at least.

Then format 3's batch signatures (docs/envelope.md, "Batch signatures (v3)"): per record, verify
of a v2 record against verify of v3 records from batches of 1, 16, 64, 256 and 1024 with a warm
root cache (a reader of the whole batch), verify of one v3 record alone (no cache: an auditor
checking one record years later), sealing per record (v2 one by one against one v3 batch), and
bytes per record. Batches over MAX_BATCH are sealed with the cap lifted, to measure them.

    .venv/bin/python bench/envelope_bench.py [--payload 600] [--iterations 400] [--batch-only]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator

from intelbus import _nacl
from intelbus.envelope import (
    BatchItem,
    DataKeyCache,
    RootCache,
    merkle,
    open_record,
    seal,
    seal_batch,
    verify,
    wire,
)
from intelbus.envelope.wire import parse
from intelbus.identity import AgencyIdentity, SealingKey, StaticKeyRing
from intelbus.kinds import RecordKind

REPS = 5
ENV = "bench"
TOPIC = "intelbus.sightings"


def per_call_us(fn: Callable[[], object], iterations: int) -> float:
    """Median over REPS repetitions of the mean time per call, in microseconds."""
    fn()  # warm up
    samples = []
    for _ in range(REPS):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        samples.append((time.perf_counter() - start) / iterations * 1e6)
    return statistics.median(samples)


BATCH_SIZES = (1, 16, 64, 256, 1024)


def _batch(
    producer: AgencyIdentity,
    recipients: list[SealingKey],
    payload: bytes,
    n: int,
    datakeys: DataKeyCache | None = None,
) -> list[bytes]:
    """n records sealed as one v3 batch (the MAX_BATCH cap lifted for sizes beyond it)."""
    items = [
        BatchItem(
            kind=RecordKind.SIGHTING,
            sequence=i,
            prev_digest=bytes(32) if i == 0 else None,
            schema_fingerprint=b"\x01" * 8,
            payload=payload,
            recipients=tuple(recipients),
        )
        for i in range(n)
    ]
    with _cap_lifted():
        if datakeys is None:
            datakeys = DataKeyCache(max_uses=1_000_000)
        return [
            s.data
            for s in seal_batch(
                producer, items, environment=ENV, topic=TOPIC, partition=0, datakeys=datakeys
            )
        ]


@contextlib.contextmanager
def _cap_lifted() -> Iterator[None]:
    """MAX_BATCH raised to the largest batch measured, for this measurement only."""
    cap = wire.MAX_BATCH
    seal_module = sys.modules["intelbus.envelope.seal"]  # the module (the package exports seal())
    wire.MAX_BATCH = seal_module.MAX_BATCH = max(cap, *BATCH_SIZES)
    try:
        yield
    finally:
        wire.MAX_BATCH = seal_module.MAX_BATCH = cap


def batch_section(
    producer: AgencyIdentity, ring: StaticKeyRing, recipients: list[SealingKey], payload: bytes
) -> None:
    """Format 3 against format 2, per record, medians of REPS runs."""

    def v2_record(datakeys: DataKeyCache | None = None) -> bytes:
        return seal(
            producer,
            environment=ENV,
            topic=TOPIC,
            kind=RecordKind.SIGHTING,
            sequence=1,
            prev_digest=bytes(32),
            schema_fingerprint=b"\x01" * 8,
            payload=payload,
            recipients=recipients,
            partition=0,
            datakeys=datakeys,
            format_version=2,
        ).data

    def verify_all(records: list[bytes], roots: RootCache | None) -> None:
        with _cap_lifted():
            for r in records:
                verify(
                    r,
                    ring,
                    expected_environment=ENV,
                    expected_topic=TOPIC,
                    expected_partition=0,
                    witnessed_at=None,
                    roots=roots,
                )

    v2_keys = DataKeyCache(max_uses=1_000_000)
    v3_keys = DataKeyCache(max_uses=1_000_000)

    def v2_sealed() -> bytes:
        # As the batch below: the data key reused, one AEAD per record.
        return v2_record(v2_keys)

    v2 = [v2_record() for _ in range(64)]
    batches = {n: _batch(producer, recipients, payload, n) for n in BATCH_SIZES}
    # Each case: (records per call, calls per sample, the call). Every repetition runs every case
    # once, side by side, so a burst of load on the shared machine hits them all alike.
    cases: dict[str, tuple[int, int, Callable[[], object]]] = {
        "v2 verify": (len(v2), 4, lambda: verify_all(v2, None)),
        "v2 seal": (1, 128, v2_sealed),
    }
    for n, records in batches.items():
        cases[f"{n} verify"] = (
            n,
            max(1, 512 // n),
            # A fresh cache each pass: one Ed25519 check per batch, then hits.
            lambda records=records: verify_all(records, RootCache()),
        )
        cases[f"{n} alone"] = (1, 64, lambda records=records: verify_all(records[-1:], None))
        cases[f"{n} seal"] = (
            n,
            max(1, 256 // n),
            lambda n=n: _batch(producer, recipients, payload, n, v3_keys),
        )
    # The two parts of a warm verification that depend on the batch: the path, and the share
    # of the one signature check.
    message = b"m" * 120
    signature = producer.sign(message)
    cases["ed25519 verify"] = (
        1,
        64,
        lambda: _nacl.verify_signature(producer.sign_public, message, signature),
    )
    for n, records in batches.items():
        with _cap_lifted():
            last = parse(records[-1])
        proof = last.proof
        if proof is None:
            raise SystemExit("a format 3 record without its proof")
        cases[f"{n} path"] = (
            1,
            256,
            lambda proof=proof, leaf=last.signed_bytes: merkle.root_from_proof(
                merkle.leaf_hash(leaf), proof.leaf_index, proof.tree_size, proof.path
            ),
        )
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in (c[2] for c in cases.values()):
        fn()  # warm up
    for _ in range(REPS * 2):
        for name, (per_call, calls, fn) in cases.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / (calls * per_call) * 1e6)
    us = {name: statistics.median(v) for name, v in samples.items()}
    _print_batch_table(us, v2, batches, len(recipients))


def _print_batch_table(
    us: dict[str, float], v2: list[bytes], batches: dict[int, list[bytes]], recipients: int
) -> None:
    print(
        f"format 3 batch signatures, {recipients} recipient(s), per record, median of "
        f"{REPS * 2} interleaved runs"
    )
    header = (
        f"{'format':<8} {'batch':>6} {'verify us':>10} {'alone us':>9} {'seal us':>8} "
        f"{'bytes':>6} {'+bytes':>7} {'verify x':>9}"
    )
    print(header)
    print("-" * len(header))
    v2_verify = us["v2 verify"]
    print(
        f"{'v2':<8} {'-':>6} {v2_verify:10.1f} {v2_verify:9.1f} {us['v2 seal']:8.1f} "
        f"{len(v2[0]):6} {0:7} {1.0:9.2f}"
    )
    for n, records in batches.items():
        size = statistics.mean(len(r) for r in records)
        print(
            f"{'v3':<8} {n:>6} {us[f'{n} verify']:10.1f} {us[f'{n} alone']:9.1f} "
            f"{us[f'{n} seal']:8.1f} {size:6.0f} {size - len(v2[0]):7.0f} "
            f"{v2_verify / us[f'{n} verify']:9.2f}"
        )
    print()
    ed = us["ed25519 verify"]
    print(
        f"ed25519 verify {ed:.1f} us; per record, path of the batch's last leaf + signature share:"
    )
    for n in batches:
        print(
            f"  batch {n:>5}: path {us[f'{n} path']:6.1f} us + {ed / n:6.2f} us = "
            f"{us[f'{n} path'] + ed / n:6.1f} us"
        )
    print()
    print("verify us: per record with a warm root cache (one signature per batch);")
    print("alone us: one record of that batch verified with no cache (an auditor, years later);")
    print("seal us: per record, the whole batch sealed at once (v2: one by one; both reuse")
    print("         the data key, so the difference is the signatures and the tree);")
    print("+bytes: mean bytes per record over v2's (path 32 x log2(batch) + 5-byte header);")
    print("verify x: v2 verify time / v3 warm verify time.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payload", type=int, default=600, help="payload bytes (an Avro record)")
    parser.add_argument("--iterations", type=int, default=400, help="calls per repetition")
    parser.add_argument("--batch-only", action="store_true", help="only the format 3 section")
    args = parser.parse_args()
    n_iter: int = args.iterations
    payload = _nacl.random_bytes(args.payload)

    producer = AgencyIdentity.generate("cst")
    forces = [AgencyIdentity.generate(f"force-{i:02d}") for i in range(10)]
    ring = StaticKeyRing([producer.public])
    if args.batch_only:
        batch_section(producer, ring, [f.public for f in forces[:3]], payload)
        return

    # --- The floor, measured in this run. ---------------------------------------------------------
    message = _nacl.random_bytes(args.payload + 300)  # about a record's signed bytes
    sig = producer.sign(message)
    data_key = _nacl.random_bytes(32)
    nonce = _nacl.random_bytes(24)
    box = _nacl.seal(forces[0].enc_public, data_key)
    ct = _nacl.aead_encrypt(data_key, nonce, payload, b"header" * 50)
    floor = {
        "ed25519 sign": per_call_us(lambda: producer.sign(message), n_iter),
        "ed25519 verify": per_call_us(
            lambda: _nacl.verify_signature(producer.sign_public, message, sig), n_iter
        ),
        "sealed box seal": per_call_us(lambda: _nacl.seal(forces[0].enc_public, data_key), n_iter),
        "sealed box open": per_call_us(lambda: forces[0].open_sealed(box), n_iter),
        "aead encrypt": per_call_us(
            lambda: _nacl.aead_encrypt(data_key, nonce, payload, b"header" * 50), n_iter
        ),
        "aead decrypt": per_call_us(
            lambda: _nacl.aead_decrypt(data_key, nonce, ct, b"header" * 50), n_iter
        ),
    }
    print(f"envelope micro-benchmark: payload {args.payload} B, median of {REPS} x {n_iter} calls")
    print(f"python {platform.python_version()}, {platform.machine()}, one core")
    print()
    print("floor (per call)")
    for name, us in floor.items():
        print(f"  {name:<18} {us:8.1f} us  {1e6 / us:10,.0f} /s")
    print()

    header = (
        f"{'recipients':>10} {'operation':<18} {'us/record':>10} {'records/s':>11} "
        f"{'floor us':>9} {'ratio':>6} {'size B':>7}"
    )
    print(header)
    print("-" * len(header))
    for n in (1, 3, 10):
        recipients = [f.public for f in forces[:n]]
        cache = DataKeyCache(max_uses=1_000_000)

        def do_seal(datakeys: DataKeyCache | None, recipients: list = recipients) -> bytes:  # type: ignore[type-arg]
            return seal(
                producer,
                environment=ENV,
                topic=TOPIC,
                kind=RecordKind.SIGHTING,
                sequence=1,
                prev_digest=bytes(32),
                schema_fingerprint=b"\x01" * 8,
                payload=payload,
                recipients=recipients,
                datakeys=datakeys,
                partition=0,
            ).data

        record = do_seal(None)
        verified = verify(
            record, ring, expected_environment=ENV, expected_topic=TOPIC, witnessed_at=None
        )
        opener = forces[n - 1]
        rows = [
            (
                "seal (fresh key)",
                per_call_us(lambda do_seal=do_seal: do_seal(None), n_iter),
                floor["ed25519 sign"] + n * floor["sealed box seal"] + floor["aead encrypt"],
            ),
            (
                "seal (reused key)",
                per_call_us(lambda do_seal=do_seal, cache=cache: do_seal(cache), n_iter),
                floor["ed25519 sign"] + floor["aead encrypt"],
            ),
            (
                "verify",
                per_call_us(
                    lambda record=record: verify(
                        record,
                        ring,
                        expected_environment=ENV,
                        expected_topic=TOPIC,
                        witnessed_at=None,
                    ),
                    n_iter,
                ),
                floor["ed25519 verify"],
            ),
            (
                "open (after verify)",
                per_call_us(
                    lambda verified=verified, opener=opener: open_record(verified, opener), n_iter
                ),
                floor["sealed box open"] + floor["aead decrypt"],
            ),
        ]
        for name, us, floor_us in rows:
            print(
                f"{n:>10} {name:<18} {us:10.1f} {1e6 / us:11,.0f} {floor_us:9.1f} "
                f"{us / floor_us:6.2f} {len(record):7}"
            )
    print()
    print("ratio = envelope time / sum of the primitives it must call (1.00 = no overhead).")
    print("verify + open of one record, as a consumer does, is the sum of those two rows.")
    print()
    batch_section(producer, ring, [f.public for f in forces[:3]], payload)


if __name__ == "__main__":
    main()
