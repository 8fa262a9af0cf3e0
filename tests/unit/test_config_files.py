"""Producer and consumer config files that cannot be read give ConfigError, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.config import ConsumerConfig
from intelbus.errors import ConfigError
from producers.config import ProducerConfig

LOADERS = {"producer": ProducerConfig.load, "consumer": ConsumerConfig.load}


@pytest.mark.parametrize("which", sorted(LOADERS))
@pytest.mark.parametrize(
    "content",
    [
        # Not UTF-8: this one crashed both loaders with UnicodeDecodeError (found by tests/fuzz).
        pytest.param(b'agency = "cst"\nkey_file = "\xff\xfe"\n', id="not-utf8"),
        pytest.param(b"agency = \n", id="not-toml"),
        pytest.param(None, id="missing"),
    ],
)
def test_an_unreadable_config_is_a_config_error(
    tmp_path: Path, which: str, content: bytes | None
) -> None:
    path = tmp_path / f"{which}.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"cannot read {which} config"):
        LOADERS[which](path)
