"""The new password of ``taxii add-user`` and ``web add-user``: prompted twice without echo, or
one line of standard input; none for a certificate-only user."""

from __future__ import annotations

import sys

import typer

from intelbus.errors import ConfigError


def new_password(*, certificate_only: bool, from_stdin: bool) -> str | None:
    """The password to hash (None: a certificate-only user).

    Raises:
        ConfigError: it is empty.
    """
    if certificate_only:
        return None
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise ConfigError("the password is empty")
    return password
