"""A longer coverage-guided run with atheris over the envelope parser, the Avro decoder, the policy
loader and the schema lint. Not collected by pytest (the name does not start with ``test_``).

atheris is an optional install, not a project dependency (it needs a clang toolchain or a wheel)::

    .venv/bin/pip install atheris
    mkdir -p /tmp/fuzz-envelope
    .venv/bin/python -m tests.fuzz.atheris_envelope envelope /tmp/fuzz-envelope \
        tests/fuzz/corpus/envelope -max_total_time=600

The first argument names the target (``envelope``, ``avro``, ``policy``, ``schema_lint``), so each
target starts from its own seed corpus; the rest go to libFuzzer, which writes every new input to
the *first* corpus folder: give it a scratch folder first and the committed corpus after it (read
only), or the repository fills with unnamed inputs. The intelbus modules are
instrumented for coverage before the run. Any exception outside the typed hierarchy
(:class:`~intelbus.errors.IntelbusError`) is a crash: atheris stops and writes the input to
``crash-<hash>``. Add it to tests/fuzz/corpus/<target>/ named ``<outcome>--regression-<what>`` so
every CI run replays it (tests/fuzz/test_corpus.py), then fix the code.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from intelbus.envelope.wire import parse
from intelbus.errors import IntelbusError
from intelbus.policy.rules import SharingPolicy
from intelbus.serde.compat import lint, normalise
from intelbus.serde.registry import SchemaRegistry

REGISTRY = SchemaRegistry.load()
FINGERPRINTS = [REGISTRY.current(n).fingerprint for n in REGISTRY.names()]
_POLICY = Path(tempfile.mkdtemp()) / "policy.toml"


def _envelope(data: bytes) -> None:
    parse(data)


def _avro(data: bytes) -> None:
    # Every registered schema in turn: a payload is hostile whichever schema it claims.
    for fingerprint in FINGERPRINTS:
        with contextlib.suppress(IntelbusError):
            REGISTRY.decode_model(fingerprint, data)


def _policy(data: bytes) -> None:
    _POLICY.write_bytes(data)
    SharingPolicy.load(_POLICY)


def _schema_lint(data: bytes) -> None:
    try:
        schema = json.loads(data)
    except ValueError:
        return
    lint(normalise(schema, None, {}))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "envelope": _envelope,
    "avro": _avro,
    "policy": _policy,
    "schema_lint": _schema_lint,
}


def main() -> None:
    import atheris  # noqa: PLC0415 - optional; only this entry point needs it

    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(
            f"usage: python -m tests.fuzz.atheris_envelope {{{','.join(TARGETS)}}} CORPUS [libFuzzer flags]"
        )
    target = TARGETS[sys.argv[1]]

    def one_input(data: bytes) -> None:
        with contextlib.suppress(IntelbusError):
            target(data)

    # Coverage feedback: without it libFuzzer mutates blindly ("no interesting inputs").
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
