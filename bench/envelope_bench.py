"""Micro-benchmark of the envelope: seal, verify and open rates, against the primitives' floor.

Not a test. Prints, per record, the median of 5 repetitions for 1, 3 and 10 recipients, sealing
with and without data-key reuse, and the floor measured in the same run: one Ed25519 signature and
verification, one sealed box (seal and open of a 32-byte data key), one XChaCha20-Poly1305 of the
same payload size. Ratios compare each envelope operation with the sum of the primitives it must
do at least.

    .venv/bin/python bench/envelope_bench.py [--payload 600] [--iterations 400]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

from intelbus import _nacl
from intelbus.envelope import DataKeyCache, open_record, seal, verify
from intelbus.identity import AgencyIdentity, StaticKeyRing
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payload", type=int, default=600, help="payload bytes (an Avro record)")
    parser.add_argument("--iterations", type=int, default=400, help="calls per repetition")
    args = parser.parse_args()
    n_iter: int = args.iterations
    payload = _nacl.random_bytes(args.payload)

    producer = AgencyIdentity.generate("cst")
    forces = [AgencyIdentity.generate(f"force-{i:02d}") for i in range(10)]
    ring = StaticKeyRing([producer.public])

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


if __name__ == "__main__":
    main()
