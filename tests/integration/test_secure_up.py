"""An operator's secured local cluster from the command line: `intelbus kafka up --secure`.

The operator makes the certificates with `intelbus deploy certs`, starts one secured node, and
creates the bus topics with the operator's certificate (the lines `kafka up` prints). A client
without a certificate is told the listener speaks TLS; an agency's certificate may not create
topics (no ACL allows it). Every step is the installed command, as the operator types it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka
INTELBUS = str(Path(sys.executable).parent / "intelbus")


def _run(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INTELBUS_", "KAFKA_"))}
    return subprocess.run(
        [INTELBUS, *args],
        cwd=cwd,
        env={**base, "NO_COLOR": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture
def secured_up(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    certs = _run(
        tmp_path,
        "deploy",
        "certs",
        "--tls-dir",
        "tls",
        "--agency",
        "cst",
        "--host",
        "127.0.0.1",
        "--host",
        "localhost",
    )
    assert certs.returncode == 0, certs.stdout + certs.stderr
    up = _run(tmp_path, "kafka", "up", "--secure", "--tls-dir", "tls", "--state-dir", "state")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        exports: dict[str, str] = {}
        for name, value in re.findall(
            r"(KAFKA_BOOTSTRAP_SERVERS|INTELBUS_TLS_\w+)=(\S+)", up.stdout
        ):
            exports[name] = value
        assert set(exports) == {
            "KAFKA_BOOTSTRAP_SERVERS",
            "INTELBUS_TLS_CA",
            "INTELBUS_TLS_CERT",
            "INTELBUS_TLS_KEY",
        }, up.stdout
        yield tmp_path, exports
    finally:
        _run(tmp_path, "kafka", "down", "--state-dir", "state", "--purge")


def test_kafka_up_secure_starts_a_tls_and_acl_cluster_the_operator_can_use(
    secured_up: tuple[Path, dict[str, str]],
) -> None:
    root, operator = secured_up
    created = _run(root, "topics", "create", "--prefix", "sec", env=operator)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "sec.sightings: created" in created.stdout
    checked = _run(root, "topics", "check", "--prefix", "sec", env=operator)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    plaintext = {"KAFKA_BOOTSTRAP_SERVERS": operator["KAFKA_BOOTSTRAP_SERVERS"]}
    refused = _run(root, "topics", "check", "--prefix", "sec", env=plaintext)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "speaks TLS" in refused.stderr
    assert "Traceback" not in refused.stderr

    cst = {
        **plaintext,
        "INTELBUS_TLS_CA": operator["INTELBUS_TLS_CA"],
        "INTELBUS_TLS_CERT": str(root / "tls" / "clients" / "cst.pem"),
        "INTELBUS_TLS_KEY": str(root / "tls" / "clients" / "cst.key"),
    }
    denied = _run(root, "topics", "create", "--prefix", "cstonly", env=cst)
    assert denied.returncode == 3, denied.stdout + denied.stderr
    assert "not authorized" in denied.stderr.lower(), denied.stderr
    assert "Traceback" not in denied.stderr
