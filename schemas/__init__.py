"""The Avro schemas of the bus (``.avsc`` files), shipped as package data, and the JSON schema of
the bus's STIX 2.1 extension (``stix/``).

``intelbus.serde`` reads the Avro schemas, through :func:`schema_dir`; ``intelbus.interop.stix``
names the STIX extension's schema (``stix/intelbus-record.v1.schema.json``).
"""

from pathlib import Path


def schema_dir() -> Path:
    """The directory holding the ``.avsc`` files."""
    return Path(__file__).resolve().parent
