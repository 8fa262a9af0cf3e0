"""Reading the project's TOML files (configs, sharing agreements, policies): one place, one error.

Every way a file can be unreadable (missing, unreadable, not UTF-8, not TOML) is the same
:class:`~intelbus.errors.ConfigError` to the caller, so a bad file is never a traceback. Not UTF-8
was once a ``UnicodeDecodeError`` out of every loader (found by tests/fuzz).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from intelbus.errors import ConfigError


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed file. ``what`` names it in the error ("consumer config", "sharing policy").

    Raises:
        ConfigError: the file cannot be read, is not UTF-8, or is not TOML.
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from e
