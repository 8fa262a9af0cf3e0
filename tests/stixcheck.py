"""The OASIS STIX validator in strict mode, as every STIX test uses it: no error and no warning.

The validator checks most of STIX against the JSON schemas it ships. The stix2-validator 3.3.1
wheel ships none (oasis-open/cti-stix-validator#248): every object then fails with "Cannot locate
a schema". That is said here in one line, not left to look like a fault of the bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import stix2validator
from stix2validator import ValidationOptions, validate_instance

STRICT = ValidationOptions(strict=True, version="2.1")
_SCHEMAS = Path(stix2validator.__file__).resolve().parent / "schemas-2.1" / "schemas"


def assert_strict(instance: dict[str, Any]) -> None:
    """``instance`` (a bundle or one object) passes ``stix2_validator --strict`` cleanly."""
    assert _SCHEMAS.is_dir(), (
        f"stix2-validator {stix2validator.__version__} is installed without its STIX JSON schemas "
        f"({_SCHEMAS} is missing; the 3.3.1 wheel ships none, oasis-open/cti-stix-validator#248): "
        "install a release whose wheel has them (3.2.0)"
    )
    result = validate_instance(instance, STRICT)
    problems = [str(e) for e in result.errors] + [str(w) for w in result.warnings]
    assert result.is_valid, problems
    assert problems == [], problems
