"""``intelbus keys ...`` and ``intelbus directory ...``: agency keys and the federation directory.

A *directory folder* holds the accepted versions (``v1.json``...) and the draft of the next one
(``draft.json``). Editing commands write the draft; ``sign`` adds one admin's signature to it;
``publish`` checks that the draft verifies as the next version, makes it ``vN.json`` and, given a
broker, appends every version not yet there to the directory topic.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.directory.follow import DirectoryFollower, DirectoryHealth, Freshness, freshness
from intelbus.directory.model import Role, SignedDirectory
from intelbus.directory.trust import DirectoryHistory, sign
from intelbus.errors import DirectoryError, IntelbusError
from intelbus.files import atomic_write
from intelbus.identity import AgencyIdentity, PublicIdentity
from intelbus.keyring import (
    create_epochs,
    destroy_epoch,
    epochs_document,
    keyring_dir,
    list_epochs,
    monthly_windows,
)
from intelbus.kinds import Family
from intelbus.transport.topics import topic_name

keys_app = typer.Typer(
    help="Agency key pairs (Ed25519 signing + X25519 encryption).", no_args_is_help=True
)
app = typer.Typer(help="The threshold-signed federation directory.", no_args_is_help=True)
epoch_app = typer.Typer(
    help="Encryption epochs: short-lived X25519 keys producers seal to (crypto-shredding).",
    no_args_is_help=True,
)
keys_app.add_typer(epoch_app, name="epoch")
console = Console()
err = Console(stderr=True, soft_wrap=True)

PASSPHRASE_ENV_HELP = "Name of an environment variable holding the key file's passphrase."
Folder = typer.Option(
    Path("directory"), "--folder", help="Directory folder (v1.json..., draft.json)."
)
Validity = typer.Option(365, "--validity-days", min=1, help="Days until this version expires.")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _passphrase(env_name: str | None) -> bytes | None:
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise _fail(f"environment variable {env_name} is empty or unset")
    return value.encode()


def _now() -> datetime:
    return datetime.now(UTC)


def _load_public(path: Path) -> PublicIdentity:
    try:
        return PublicIdentity.from_json(path.read_text())
    except (OSError, ValueError, IntelbusError) as e:
        raise _fail(f"cannot read public key file {path}: {e}") from None


def _latest(folder: Path) -> DirectoryHistory:
    try:
        return dstore.load_folder(folder)
    except (DirectoryError, IntelbusError) as e:
        raise _fail(f"{folder}: {e}") from None


def _write_draft(folder: Path, doc: SignedDirectory) -> None:
    draft = folder / dstore.DRAFT
    if draft.exists():
        raise _fail(f"{draft} already exists: publish or delete it before starting another change")
    folder.mkdir(parents=True, exist_ok=True)
    dstore.write_file(draft, doc)
    console.print(
        f"draft of v{doc.signed.version} written to {draft}; "
        f"it needs {doc.signed.threshold} admin signature(s): `intelbus directory sign`"
    )


# --- keys ------------------------------------------------------------------------------------------


@keys_app.command("new")
def keys_new(
    agency: str = typer.Option(..., "--agency", help="Agency id, e.g. cst or met-police."),
    out: Path = typer.Option(
        Path("keys"), "--out", help="Folder for <agency>.key and <agency>.pub.json."
    ),
    passphrase_env: str | None = typer.Option(None, "--passphrase-env", help=PASSPHRASE_ENV_HELP),
) -> None:
    """Make a new key pair: a private key file (mode 0600) and a public key file to share."""
    identity = AgencyIdentity.generate(agency)
    out.mkdir(parents=True, exist_ok=True)
    private = out / f"{agency}.key"
    public = out / f"{agency}.pub.json"
    try:
        identity.save(private, passphrase=_passphrase(passphrase_env))
    except FileExistsError:
        raise _fail(f"{private} exists; refusing to overwrite a private key") from None
    atomic_write(public, identity.public.to_json().encode(), mode=0o644)
    console.print(f"key id {identity.public.key_id.hex()} for {agency}")
    console.print(f"private key: {private} (mode 0600)  public key: {public}")


# --- encryption epochs -----------------------------------------------------------------------------

KeyFile = typer.Option(..., "--key-file", help="The agency's private key file.")


def _utc_option(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _epochs_out(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".epochs.json")


@epoch_app.command("new")
def epoch_new(
    key_file: Path = KeyFile,
    not_before: datetime | None = typer.Option(
        None, "--not-before", help="Start of one epoch (UTC)."
    ),
    not_after: datetime | None = typer.Option(None, "--not-after", help="End of that epoch (UTC)."),
    months: int | None = typer.Option(
        None, "--months", min=1, max=120, help="Instead: N consecutive calendar-month epochs."
    ),
    start: datetime | None = typer.Option(
        None, "--start", help="With --months: a time in the first month (default: now)."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Where to write the keyring's public epochs for `directory add-epochs` "
        "(default: <key file>.epochs.json).",
    ),
) -> None:
    """Make encryption-epoch key pairs in the keyring beside the key file (each 0600), and write
    their public parts for the directory."""
    begin, end = _utc_option(not_before), _utc_option(not_after)
    if months is not None:
        if begin is not None or end is not None:
            raise _fail("give either --months or --not-before/--not-after, not both")
        windows = monthly_windows(_utc_option(start) or _now(), months)
    elif begin is not None and end is not None:
        windows = [(begin, end)]
    else:
        raise _fail("give --not-before and --not-after, or --months")
    made = create_epochs(key_file, windows)
    target = out if out is not None else _epochs_out(key_file)
    atomic_write(target, json.dumps(epochs_document(key_file), indent=2).encode(), mode=0o644)
    for epoch in made:
        console.print(
            f"epoch {epoch.epoch_id.hex()}  {epoch.not_before.isoformat()} .. "
            f"{epoch.not_after.isoformat()}",
            highlight=False,
        )
    console.print(
        f"{len(made)} epoch key(s) in {keyring_dir(key_file)} (mode 0600); public parts in "
        f"{target}: list them with `intelbus directory add-epochs --epochs {target}`",
        highlight=False,
    )


@keys_app.command("epochs")
def keys_epochs(
    key_file: Path = KeyFile,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the keyring's encryption epochs and their state (held, destroyed, missing)."""
    infos = list_epochs(key_file)
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        **e.public(),
                        "state": e.state,
                        "destroyed_at": e.destroyed_at.isoformat() if e.destroyed_at else None,
                    }
                    for e in infos
                ],
                indent=2,
            )
        )
        return
    table = Table(title=f"encryption epochs of {key_file}")
    for col in ("epoch id", "not before", "not after", "state", "destroyed at"):
        # The id whole: it is what destroy-epoch takes.
        table.add_column(col, no_wrap=col == "epoch id", overflow="fold")
    for e in infos:
        table.add_row(
            e.epoch_id,
            f"{e.not_before:%Y-%m-%d %H:%M}Z",
            f"{e.not_after:%Y-%m-%d %H:%M}Z",
            e.state,
            f"{e.destroyed_at:%Y-%m-%d %H:%M}Z" if e.destroyed_at else "",
        )
    console.print(table)


@keys_app.command("destroy-epoch")
def keys_destroy_epoch(
    key_file: Path = KeyFile,
    epoch: str = typer.Option(..., "--epoch", help="The epoch id (hex) whose key to destroy."),
    retention_days: int = typer.Option(
        0,
        "--retention-days",
        min=0,
        help="Refuse unless the epoch ended at least this many days ago.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Destroy within the retention period (never a current epoch)."
    ),
) -> None:
    """IRREVERSIBLY destroy a past encryption epoch's private key (crypto-shredding).

    After this nobody can open the records sealed to that epoch from Kafka, ever; their
    signatures, chains and audit digests still verify. An epoch that has not ended is always
    refused. Keep no backup of the key beyond the same date.
    """
    gone = destroy_epoch(
        key_file, epoch, now=_now(), retention=timedelta(days=retention_days), force=force
    )
    console.print(
        f"destroyed the key of epoch {epoch} on {gone.destroyed_at.isoformat()}: records sealed "
        "to it can no longer be opened (crypto-shredded)",
        highlight=False,
    )


# --- directory -------------------------------------------------------------------------------------


@app.command("init")
def init(
    folder: Path = Folder,
    environment: str = typer.Option(
        ..., "--environment", help="Bus/environment id, e.g. demo or prod."
    ),
    admin: list[Path] = typer.Option(..., "--admin", help="Public key file of an admin (repeat)."),
    threshold: int = typer.Option(..., "--threshold", min=1, help="Admin signatures needed."),
    validity_days: int = Validity,
) -> None:
    """Draft version 1: the admin keys and the threshold."""
    if dstore.folder_versions(folder) if folder.exists() else []:
        raise _fail(f"{folder} already holds directory versions")
    admins = [edit.admin_key(_load_public(p).sign_public, _load_public(p).agency_id) for p in admin]
    try:
        doc = edit.initial(
            environment=environment,
            admin_keys=admins,
            threshold=threshold,
            now=_now(),
            validity=timedelta(days=validity_days),
        )
    except ValueError as e:
        raise _fail(str(e)) from None
    _write_draft(folder, doc)


@app.command("add-agency")
def add_agency(
    folder: Path = Folder,
    agency: str = typer.Option(..., "--agency"),
    name: str = typer.Option(..., "--name", help="Display name."),
    role: list[Role] = typer.Option(
        ..., "--role", help="producer, consumer, auditor or admin (repeat)."
    ),
    topic: list[str] = typer.Option(
        [], "--topic", help="A topic the agency may publish to (repeat)."
    ),
    force_area: list[str] = typer.Option([], "--force-area", help="Police force area (repeat)."),
    public: Path = typer.Option(..., "--public", help="The agency's public key file."),
    validity_days: int = Validity,
) -> None:
    """Draft N+1 with a new agency."""
    body = _latest(folder).latest
    try:
        doc = edit.add_agency(
            body,
            agency_id=agency,
            display_name=name,
            roles=role,
            identity=_load_public(public),
            publish_topics=topic,
            force_areas=force_area,
            now=_now(),
            validity=timedelta(days=validity_days),
        )
    except (ValueError, DirectoryError) as e:
        raise _fail(str(e)) from None
    _write_draft(folder, doc)


@app.command("rotate-key")
def rotate_key(
    folder: Path = Folder,
    agency: str = typer.Option(..., "--agency"),
    public: Path = typer.Option(..., "--public", help="The agency's new public key file."),
    validity_days: int = Validity,
) -> None:
    """Draft N+1 where the agency's current key ends now and the new one starts."""
    body = _latest(folder).latest
    try:
        doc = edit.rotate_key(
            body,
            agency_id=agency,
            identity=_load_public(public),
            now=_now(),
            validity=timedelta(days=validity_days),
        )
    except (ValueError, DirectoryError) as e:
        raise _fail(str(e)) from None
    _write_draft(folder, doc)


@app.command("revoke-key")
def revoke_key(
    folder: Path = Folder,
    agency: str = typer.Option(..., "--agency"),
    key_id: str = typer.Option(..., "--key-id", help="Hex key id to revoke."),
    reason: str = typer.Option(..., "--reason"),
    compromised_since: datetime | None = typer.Option(
        None, "--compromised-since", help="When the key leaked (UTC), if it did."
    ),
    validity_days: int = Validity,
) -> None:
    """Draft N+1 revoking a key now; records signed after --compromised-since will be refused."""
    body = _latest(folder).latest
    since = (
        compromised_since.replace(tzinfo=UTC)
        if compromised_since and compromised_since.tzinfo is None
        else compromised_since
    )
    try:
        doc = edit.revoke_key(
            body,
            agency_id=agency,
            key_id=key_id,
            reason=reason,
            now=_now(),
            compromised_since=since,
            validity=timedelta(days=validity_days),
        )
    except (ValueError, DirectoryError) as e:
        raise _fail(str(e)) from None
    _write_draft(folder, doc)


@app.command("add-epochs")
def add_epochs(
    folder: Path = Folder,
    epochs: Path = typer.Option(
        ..., "--epochs", help="An epochs file from `intelbus keys epoch new` (public parts)."
    ),
    agency: str | None = typer.Option(
        None, "--agency", help="The agency (checked against the file; default: the file's)."
    ),
    validity_days: int = Validity,
) -> None:
    """Draft N+1 listing an agency key's encryption epochs (those not listed yet)."""
    body = _latest(folder).latest
    try:
        agency_id, key_id, parsed = edit.parse_epochs(json.loads(epochs.read_text()))
        if agency is not None and agency != agency_id:
            raise _fail(f"{epochs} holds {agency_id}'s epochs, not {agency}'s")
        doc = edit.add_epochs(
            body,
            agency_id=agency_id,
            key_id=key_id,
            epochs=parsed,
            now=_now(),
            validity=timedelta(days=validity_days),
        )
    except (ValueError, DirectoryError) as e:
        raise _fail(str(e)) from None
    _write_draft(folder, doc)


@app.command("remove-agency")
def remove_agency(
    folder: Path = Folder,
    agency: str = typer.Option(..., "--agency"),
    validity_days: int = Validity,
) -> None:
    """Draft N+1 where the agency leaves now (its keys stay listed for replay)."""
    body = _latest(folder).latest
    try:
        doc = edit.remove_agency(
            body, agency_id=agency, now=_now(), validity=timedelta(days=validity_days)
        )
    except (ValueError, DirectoryError) as e:
        raise _fail(str(e)) from None
    _write_draft(folder, doc)


@app.command("renew")
def renew(folder: Path = Folder, validity_days: int = Validity) -> None:
    """Draft N+1 that changes nothing but its issue and expiry times: the routine that keeps the
    directory from expiring (every role refuses an expired one)."""
    body = _latest(folder).latest
    try:
        doc = edit.renew(body, now=_now(), validity=timedelta(days=validity_days))
    except (ValueError, DirectoryError) as e:
        raise _fail(str(e)) from None
    _write_draft(folder, doc)


@app.command("sign")
def sign_draft(
    folder: Path = Folder,
    key: Path = typer.Option(..., "--key", help="An admin's private key file."),
    passphrase_env: str | None = typer.Option(None, "--passphrase-env", help=PASSPHRASE_ENV_HELP),
) -> None:
    """Add one admin's signature to the draft."""
    draft_path = folder / dstore.DRAFT
    if not draft_path.exists():
        raise _fail(f"no draft in {folder}")
    try:
        identity = AgencyIdentity.load(key, passphrase=_passphrase(passphrase_env))
        doc = sign(dstore.load_file(draft_path), identity.signing_seed())
    except IntelbusError as e:
        raise _fail(str(e)) from None
    dstore.write_file(draft_path, doc)
    console.print(f"draft v{doc.signed.version} now has {len(doc.signatures)} signature(s)")


@app.command("publish")
def publish(
    folder: Path = Folder,
    bootstrap: str | None = typer.Option(
        None, "--bootstrap-server", "--bootstrap", envvar="KAFKA_BOOTSTRAP_SERVERS"
    ),
    topic: str = typer.Option(topic_name(Family.DIRECTORY), "--topic"),
) -> None:
    """Accept the draft as the next version (it must verify), then append new versions to Kafka."""
    draft_path = folder / dstore.DRAFT
    if draft_path.exists():
        try:
            draft = dstore.load_file(draft_path)
            if dstore.folder_versions(folder):
                dstore.load_folder(folder).update(draft)
            else:
                DirectoryHistory(draft)
        except (DirectoryError, IntelbusError) as e:
            raise _fail(f"the draft does not verify: {e}") from None
        dstore.write_file(dstore.version_path(folder, draft.signed.version), draft)
        draft_path.unlink()
        console.print(f"accepted v{draft.signed.version}")
    if bootstrap:
        history = _latest(folder)
        try:
            on_topic = dstore.published_versions(bootstrap, topic, history)
            new = [d for d in history.versions if d.signed.version not in on_topic]
            dstore.publish_to_topic(bootstrap, topic, new)
        except IntelbusError as e:
            raise _fail(str(e), code=3) from None
        console.print(f"published {len(new)} version(s) to {topic}")


@app.command("verify")
def verify(
    folder: Path = Folder,
    pinned: Path | None = typer.Option(
        None, "--pinned", help="Trusted first version (default: the folder's v1)."
    ),
    bootstrap: str | None = typer.Option(
        None, "--bootstrap-server", "--bootstrap", help="Read the chain from Kafka instead."
    ),
    topic: str = typer.Option(topic_name(Family.DIRECTORY), "--topic"),
) -> None:
    """Verify the chain from the pinned version to the newest, and that the newest has not expired."""
    try:
        if bootstrap:
            if pinned is None:
                raise _fail("--pinned is required with --bootstrap")
            history, problems = dstore.fetch_from_topic(bootstrap, topic, dstore.load_file(pinned))
            for p in problems:
                err.print(f"refused a version on {topic}: {p}", highlight=False)
        else:
            history = dstore.load_folder(folder, dstore.load_file(pinned) if pinned else None)
        history.check_fresh(_now())
    except (DirectoryError, IntelbusError) as e:
        raise _fail(str(e), code=1) from None
    latest = history.latest
    console.print(
        f"directory OK: {len(history.versions)} version(s) verified, newest v{latest.version} "
        f"({latest.environment}), expires {latest.expires.isoformat()}"
    )


@app.command("refresh")
def refresh(
    folder: Path = Folder,
    bootstrap: str | None = typer.Option(
        None,
        "--bootstrap-server",
        "--bootstrap",
        envvar="KAFKA_BOOTSTRAP_SERVERS",
        help="Kafka brokers.",
    ),
    topic: str = typer.Option(topic_name(Family.DIRECTORY), "--topic"),
) -> None:
    """Read the directory topic and add every newer version that verifies to the folder.

    The way out of an expired directory for a consumer, publisher or auditor: their folder gains
    the versions the admins published since. Exit 0 fresh, 1 still expired (no newer version
    has been published: ask the directory admins), 3 the broker could not be read.
    """
    if not bootstrap:
        raise _fail("--bootstrap (or KAFKA_BOOTSTRAP_SERVERS) is required")
    history = _latest(folder)
    follower = DirectoryFollower(history, bootstrap_servers=bootstrap, topic=topic, folder=folder)
    try:
        new = follower.catch_up()
    except IntelbusError as e:
        raise _fail(str(e), code=3) from None
    finally:
        follower.close()
    for problem in follower.problems:
        err.print(f"refused a document on {topic}: {problem}", highlight=False)
    if follower.missing:
        err.print(f"the directory topic {topic} does not exist", highlight=False)
    console.print(f"{len(new)} new version(s) added; newest v{history.latest.version}")
    _report_health(freshness(history, _now()))


@app.command("status")
def status(folder: Path = Folder) -> None:
    """How the folder's newest version stands: fresh, expiring (a quarter of its validity left:
    publish the next one), or expired (frozen: every role refuses to act). Exit 1 when expired,
    for monitoring."""
    _report_health(freshness(_latest(folder), _now()))


def _report_health(health: DirectoryHealth) -> None:
    console.print(health.describe(), highlight=False)
    if health.state is Freshness.EXPIRED:
        raise typer.Exit(1)


@app.command("show")
def show(
    folder: Path = Folder,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The newest verified version, as a table or JSON."""
    latest = _latest(folder).latest
    if as_json:
        typer.echo(json.dumps(latest.model_dump(mode="json"), indent=2))
        return
    console.print(
        f"directory v{latest.version} ({latest.environment}), issued {latest.issued_at:%Y-%m-%d %H:%M}Z, "
        f"expires {latest.expires:%Y-%m-%d}; {latest.threshold} of {len(latest.admin_keys)} admin signatures"
    )
    table = Table()
    for col in ("agency", "name", "roles", "topics", "key id", "valid from", "until", "status"):
        table.add_column(col)
    for a in latest.agencies:
        for k in a.keys:
            status = "active"
            if a.removed_at is not None:
                status = "agency removed"
            if k.revocation is not None:
                status = f"revoked ({k.revocation.reason})"
                if k.revocation.compromised_since:
                    status += (
                        f", compromised since {k.revocation.compromised_since:%Y-%m-%d %H:%M}Z"
                    )
            elif k.not_after is not None and a.removed_at is None:
                status = "rotated out"
            if k.enc_epochs:
                # Sealed to per-period encryption epochs (crypto-shredding), not to the key itself.
                last = max(e.not_after for e in k.enc_epochs)
                status += f"; {len(k.enc_epochs)} epoch(s) until {last:%Y-%m-%d}"
            table.add_row(
                a.agency_id,
                a.display_name,
                ",".join(a.roles),
                ",".join(a.publish_topics) or "-",
                k.key_id[:16],
                f"{k.not_before:%Y-%m-%d %H:%M}",
                f"{k.not_after:%Y-%m-%d %H:%M}" if k.not_after else "-",
                status,
            )
    console.print(table)
