"""The command line's exit codes, and the one handler that turns an expected error into one line.

Every ``intelbus`` command exits with one of:

* **0** done;
* **1** refused or found something: a record not published because a rule forbids it, audit
  findings, a stale feed, records missing, drift between a topic and what the bus needs;
* **2** usage: an unknown option value, a malformed input or config file, a file that is not
  safe to use (a private key others may read);
* **3** environment: the broker cannot be reached or refuses, a topic is missing or
  misconfigured, a store cannot be opened or belongs to another agency, a file is missing or
  unreadable, the directory has expired;
* **130** interrupted (Ctrl-C).

An expected error (anything in :mod:`intelbus.errors`, a missing or unreadable file, a file that
is not UTF-8 text) is printed as one line on stderr, ``error: ...``, and never as a traceback;
``intelbus --debug ...`` (or ``INTELBUS_DEBUG=1``) shows the traceback as well. Anything else is a
defect and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from intelbus.errors import (
    AuditStateError,
    ConfigError,
    DirectoryExpired,
    InfraError,
    IntelbusError,
    OwnershipError,
    SchemaDefinitionError,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130

_ENVIRONMENT = (InfraError, OwnershipError, AuditStateError, DirectoryExpired, OSError)
_USAGE = (ConfigError, SchemaDefinitionError, UnicodeDecodeError)

#: Set by ``--debug`` (the root callback): also print the traceback of an expected error.
debug = os.environ.get("INTELBUS_DEBUG", "") not in ("", "0")


def exit_code(error: BaseException) -> int:
    """The documented exit code of an expected error (module docstring)."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, _ENVIRONMENT):
        return EXIT_ENVIRONMENT
    if isinstance(error, _USAGE):
        return EXIT_USAGE
    return EXIT_REFUSED


def one_line(error: BaseException) -> str:
    """What went wrong, in one line, naming the file or setting where there is one."""
    if isinstance(error, UnicodeDecodeError):
        return f"the input is not UTF-8 text (byte {error.start}): save it as UTF-8 and try again"
    if isinstance(error, FileNotFoundError):
        return f"no such file: {error.filename}"
    if isinstance(error, PermissionError):
        return f"permission denied: {error.filename}"
    if isinstance(error, IsADirectoryError):
        return f"a folder where a file was expected: {error.filename}"
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or type(error).__name__}{where}"
    text = " ".join(str(error).split())
    code = getattr(error, "code", None)
    if isinstance(code, str) and not text.startswith(code):
        text = f"{code}: {text}"
    return text or type(error).__name__


def _expected(error: BaseException) -> bool:
    return isinstance(error, (IntelbusError, OSError, UnicodeDecodeError, KeyboardInterrupt))


class IntelbusGroup(TyperGroup):
    """The root command group: runs the command, and turns an expected error into its one line
    and exit code (module docstring)."""

    def invoke(self, ctx: Any) -> Any:  # noqa: ANN401 - typer's vendored click Context
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except BaseException as e:
            if not _expected(e):
                raise  # a defect: its traceback is the report
            if isinstance(e, KeyboardInterrupt):
                typer.echo("interrupted", err=True)
                raise typer.Exit(EXIT_INTERRUPTED) from None
            if debug:
                import traceback  # noqa: PLC0415 - only for --debug

                traceback.print_exception(e, file=sys.stderr)
            typer.echo(f"error: {one_line(e)}", err=True)
            raise typer.Exit(exit_code(e)) from None
