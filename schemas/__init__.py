"""The Avro schemas of the bus (``.avsc`` files), shipped as package data.

Only ``intelbus.serde`` reads them, through :func:`schema_dir`.
"""

from pathlib import Path


def schema_dir() -> Path:
    """The directory holding the ``.avsc`` files."""
    return Path(__file__).resolve().parent
