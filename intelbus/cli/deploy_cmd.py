"""``intelbus deploy certs|acls``: transport security for an operator.

* ``certs`` makes (once) the bus's private CA and issues the brokers' certificate, the operator's
  ``admin`` certificate and one client certificate per agency (CN = agency id), as PEM files with
  0600 keys. Existing certificates are kept unless ``--rotate``.
* ``acls`` derives the Kafka ACLs from the verified directory, shows the difference with what the
  cluster holds, and applies it only with ``--apply`` (a dry run is the default).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from deploy.kafka import acls as acl_plan
from deploy.tls.certs import (
    ADMIN_PRINCIPAL,
    CertificateAuthority,
    IssuedCert,
    check_agency_id,
)
from intelbus.directory import store as dstore
from intelbus.errors import IntelbusError, KafkaUnavailableError, NotAuthorized
from intelbus.transport.security import SecurityMode, TlsFiles, TransportSecurity
from intelbus.transport.topics import DEFAULT_PREFIX

app = typer.Typer(
    help="Transport security: certificates and directory-derived Kafka ACLs.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.command("certs")
def certs(
    tls_dir: Path = typer.Option(..., "--tls-dir", help="Folder of the CA and the certificates."),
    directory: Path | None = typer.Option(
        None, "--directory", help="Issue for every current agency of this directory folder."
    ),
    agency: list[str] = typer.Option([], "--agency", help="Issue for this agency id (repeat)."),
    host: list[str] = typer.Option(
        [], "--host", help="A broker host name or IP for the SANs (loopback is always in)."
    ),
    server: list[str] = typer.Option(
        [],
        "--server",
        help="Issue servers/NAME.pem for a TAXII server (TLS serving only), with the --server-host "
        "names (repeat).",
    ),
    server_host: list[str] = typer.Option(
        [], "--server-host", help="A host name or IP for the --server certificates' SANs."
    ),
    rotate: bool = typer.Option(False, "--rotate", help="Re-issue certificates that exist."),
) -> None:
    """Create the CA if needed; issue broker, admin, agency and server certificates (keys 0600)."""
    try:
        ca = CertificateAuthority.open_or_create(tls_dir)
        wanted = list(dict.fromkeys(agency))
        if directory is not None:
            body = dstore.load_folder(directory).latest
            wanted += [
                a.agency_id
                for a in body.agencies
                if a.removed_at is None and a.agency_id not in wanted
            ]
        for agency_id in wanted:
            check_agency_id(agency_id)  # before anything is issued, and even if its files exist
        issued: list[IssuedCert] = []
        broker_file = tls_dir / "brokers" / "broker.pem"
        if rotate or host or not broker_file.exists():
            issued.append(ca.issue_broker(host))
        if rotate or not (tls_dir / "clients" / f"{ADMIN_PRINCIPAL}.pem").exists():
            issued.append(ca.issue_admin())
        for agency_id in wanted:
            if rotate or not (tls_dir / "clients" / f"{agency_id}.pem").exists():
                issued.append(ca.issue_agency(agency_id))
        for name in dict.fromkeys(server):
            if rotate or server_host or not (tls_dir / "servers" / f"{name}.pem").exists():
                issued.append(ca.issue_server(name, server_host))
    except IntelbusError as e:  # CertError, directory and config errors
        raise _fail(str(e), 2) from None
    table = Table(title=f"certificates issued under {tls_dir} (CA {ca.ca_file.name})")
    for col in ("name", "kind", "certificate", "key (0600)", "valid until"):
        table.add_column(col)
    for c in issued:
        table.add_row(
            c.name, c.kind.value, str(c.cert_file), str(c.key_file), f"{c.not_after:%Y-%m-%d}"
        )
    console.print(table if issued else "nothing to issue: every certificate exists (--rotate)")


def _admin_security(tls_dir: Path | None) -> TransportSecurity:
    if tls_dir is None:
        return TransportSecurity.from_env()
    files = TlsFiles(
        ca_file=tls_dir / "ca.pem",
        cert_file=tls_dir / "clients" / f"{ADMIN_PRINCIPAL}.pem",
        key_file=tls_dir / "clients" / f"{ADMIN_PRINCIPAL}.key",
    )
    return TransportSecurity(SecurityMode.REQUIRED, files)


@app.command("acls")
def acls(
    directory: Path = typer.Option(..., "--directory", help="The directory folder (verified)."),
    prefix: str = typer.Option(DEFAULT_PREFIX, "--prefix", help="The bus's topic prefix."),
    bootstrap: str | None = typer.Option(
        None,
        "--bootstrap-server",
        "--bootstrap",
        envvar="KAFKA_BOOTSTRAP_SERVERS",
        help="The secured cluster.",
    ),
    tls_dir: Path | None = typer.Option(
        None,
        "--tls-dir",
        help="Connect with <tls-dir>/clients/admin.pem (default: INTELBUS_TLS_* variables).",
    ),
    apply: bool = typer.Option(
        False, "--apply/--dry-run", help="Apply the difference (default: only show it)."
    ),
) -> None:
    """Show (and with --apply, make) the ACL changes the directory calls for."""
    if not bootstrap:
        raise _fail("no --bootstrap and KAFKA_BOOTSTRAP_SERVERS is unset", 2)
    try:
        body = dstore.load_folder(directory).latest
        desired = acl_plan.desired_acls(body, prefix=prefix)
        security = _admin_security(tls_dir)
    except IntelbusError as e:
        raise _fail(str(e), 2) from None
    try:
        change = acl_plan.apply(bootstrap, desired, security=security, dry_run=not apply)
    except NotAuthorized as e:
        raise _fail(f"{e} (ACLs are managed with the operator's admin certificate)", 3) from None
    except KafkaUnavailableError as e:
        raise _fail(str(e), 3) from None
    for line in change.lines():
        console.print(f"[{'red' if line.startswith('-') else 'green'}]{line}[/]", highlight=False)
    verb = "applied" if apply else "would apply (dry run; --apply to make it so)"
    console.print(
        f"directory v{body.version}: {len(desired)} bindings wanted; {verb}: "
        f"+{len(change.add)} -{len(change.remove)}"
        + ("" if change.add or change.remove else " (already in place)"),
        highlight=False,
    )
