"""A longer coverage-guided run with atheris over the envelope parser, the Avro decoder, the policy
loader and the schema lint. Not collected by pytest (the name does not start with ``test_``).

atheris is an optional install, not a project dependency (it needs a clang toolchain)::

    .venv/bin/pip install atheris
    .venv/bin/python -m tests.fuzz.atheris_envelope tests/fuzz/corpus/envelope -max_total_time=600
    .venv/bin/python -m tests.fuzz.atheris_envelope tests/fuzz/corpus/envelope -runs=1000000

The first byte of each input picks the target. Any exception outside the typed hierarchy
(:class:`~intelbus.errors.IntelbusError`) is a crash: atheris stops and writes the input to
``crash-<hash>``. Add it to tests/fuzz/corpus/<target>/ named ``<outcome>--regression-<what>`` so
every CI run replays it (tests/fuzz/test_corpus.py), then fix the code.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from intelbus.envelope.wire import parse
from intelbus.errors import IntelbusError
from intelbus.policy.rules import SharingPolicy
from intelbus.serde.compat import lint, normalise
from intelbus.serde.registry import SchemaRegistry

REGISTRY = SchemaRegistry.load()
FINGERPRINTS = [REGISTRY.current(n).fingerprint for n in REGISTRY.names()]
_POLICY = Path(tempfile.mkdtemp()) / "policy.toml"


def one_input(data: bytes) -> None:
    """Run one input through the target its first byte picks; typed errors are expected."""
    if not data:
        return
    selector, body = data[0] % 4, data[1:]
    try:
        if selector == 0:
            parse(body)
        elif selector == 1 and body:
            REGISTRY.decode_model(FINGERPRINTS[body[0] % len(FINGERPRINTS)], body[1:])
        elif selector == 2:
            _POLICY.write_bytes(body)
            SharingPolicy.load(_POLICY)
        else:
            try:
                schema = json.loads(body)
            except ValueError:
                return
            lint(normalise(schema, None, {}))
    except IntelbusError:
        pass


def main() -> None:
    import atheris  # noqa: PLC0415 - optional; only this entry point needs it

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
