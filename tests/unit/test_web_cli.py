"""``intelbus web add-user`` and the refusals of ``intelbus web --config`` before it listens:
each one line and exit 2 (docs/cli.md), never a traceback."""

from __future__ import annotations

import stat
from pathlib import Path

from typer.testing import CliRunner

from intelbus.cli.main import app
from intelbus.interop.taxii_auth import Authenticator
from tests.taxii_store import fill

runner = CliRunner()


def _force(tmp_path: Path, web: str) -> Path:
    fill(tmp_path / "herts.sqlite")
    config = tmp_path / "herts.toml"
    config.write_text(
        f'agency = "herts-police"\nkey_file = "k.key"\ndirectory = "d"\npolicy = "p.toml"\n'
        f'store = "herts.sqlite"\nenvironment = "test"\n{web}'
    )
    return config


def test_add_user_makes_a_private_folder_and_file_and_the_password_works(tmp_path: Path) -> None:
    users = tmp_path / "web-users" / "herts.json"
    result = runner.invoke(
        app, ["web", "add-user", "analyst.jones", "--users", str(users), "--password-stdin"],
        input="a passphrase for the shift\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "added console user analyst.jones" in result.output
    assert "a passphrase" not in result.output
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    assert stat.S_IMODE(users.parent.stat().st_mode) == 0o700
    assert Authenticator(users).password("analyst.jones", "a passphrase for the shift").user == (
        "analyst.jones"
    )
    empty = runner.invoke(
        app, ["web", "add-user", "x.y", "--users", str(users), "--password-stdin"], input="\n"
    )
    assert empty.exit_code == 2
    assert "the password is empty" in empty.output


def test_refusals_before_listening_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = {
        "no [web] users_file": ("", "no users_file in [web]"),
        "users file not made yet": ('[web]\nusers_file = "nobody.json"\n', "add a user with"),
        "no HTTPS off loopback": (
            '[web]\nbind = "0.0.0.0"\nusers_file = "u.json"\n',
            "without HTTPS",
        ),
        "unknown key": (
            '[web]\nusers_file = "u.json"\ncolour = "red"\n',
            "invalid consumer config",
        ),
        "a tile URL that could widen the CSP": (
            '[web]\nusers_file = "u.json"\ntile_url = "https://t.example/{z}/{x}/{y}.png; script-src *"\n',
            "tile_url",
        ),
    }
    for name, (web, expected) in cases.items():
        folder = tmp_path / name.replace(" ", "-").replace("[", "").replace("]", "")
        folder.mkdir()
        result = runner.invoke(app, ["web", "--config", str(_force(folder, web))])
        assert result.exit_code == 2, (name, result.output)
        assert expected in result.output, (name, result.output)
        assert "Traceback" not in result.output, name
    nothing = runner.invoke(app, ["web"])
    assert nothing.exit_code == 2
    assert "--config" in nothing.output
