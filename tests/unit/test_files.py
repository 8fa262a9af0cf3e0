"""Private files: key permission checks, and writes that never follow a planted link.

The attacker is another local user on the same host: they cannot read a 0600 file, but they can
read a file the umask left 0644, and they can plant a symbolic link wherever a program writes to
a name it can guess. Every writer is checked against links at the destination and at the fixed
temporary names the code used before (``x.tmp``, ``.x.tmp``, ``x.partial``): the link's target must
keep its content.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumers.audit import checkpoint as cp
from consumers.audit.findings import Finding
from consumers.audit.report import FindingSpool, write_report
from deploy.tls.certs import CertificateAuthority
from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.errors import ConfigError, ReasonCode, UnsafeFile
from intelbus.files import (
    InsecureFileError,
    atomic_write,
    atomic_writer,
    check_private,
    ensure_private_file,
    open_private_existing,
    open_private_new,
    read_private,
)
from intelbus.identity import AgencyIdentity
from intelbus.store.base import StoredRecordView
from intelbus.store.export import CSV_COLUMNS, write_csv, write_export_file

SECRET = b"the victim's own file\n"
LOOSE_MODES = (0o640, 0o604, 0o644, 0o660, 0o606, 0o610, 0o601, 0o700 | 0o070, 0o400 | 0o004)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def no_umask() -> Iterator[None]:
    """Umask 0: a file whose mode came from the umask would be 0666, so 0600 must be chosen."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file the attacker wants overwritten, somewhere else."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    path = folder / "victim"
    path.write_bytes(SECRET)
    return path


def _plant(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _assert_refused_mode(err: pytest.ExceptionInfo[InsecureFileError], path: Path, mode: int):
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert f"{mode:04o}" in message
    assert f"chmod 600 {path}" in message
    assert err.value.path == path
    assert err.value.mode == mode


# --- check_private / read_private -----------------------------------------------------------------


@pytest.mark.parametrize("mode", LOOSE_MODES, ids=lambda m: f"{m:04o}")
def test_a_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "k.key"
    key.write_bytes(b"secret")
    key.chmod(mode)
    with pytest.raises(InsecureFileError) as err:
        read_private(key)
    _assert_refused_mode(err, key, mode)
    with pytest.raises(InsecureFileError) as err:
        check_private(key)
    _assert_refused_mode(err, key, mode)
    # The project's typed errors for an unusable file.
    assert isinstance(err.value, UnsafeFile)
    assert isinstance(err.value, ConfigError)


@pytest.mark.parametrize("mode", [0o600, 0o400], ids=lambda m: f"{m:04o}")
def test_an_owner_only_key_file_is_read(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "k.key"
    key.write_bytes(b"secret")
    key.chmod(mode)
    check_private(key)
    assert read_private(key) == b"secret"


def test_a_link_to_a_key_file_is_judged_by_the_file_it_leads_to(tmp_path: Path) -> None:
    """Secrets are often mounted behind links: followed for reading, and the target is judged."""
    key = tmp_path / "k.key"
    key.write_bytes(b"secret")
    key.chmod(0o600)
    link = _plant(tmp_path / "link.key", key)
    assert read_private(link) == b"secret"
    key.chmod(0o644)
    with pytest.raises(InsecureFileError, match="0644"):
        read_private(link)


def test_a_fifo_or_a_folder_is_not_a_key_file(tmp_path: Path) -> None:
    """A FIFO planted as a key file is refused at once (the open does not wait for a writer)."""
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    done: list[BaseException] = []

    def read() -> None:
        try:
            read_private(fifo)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread to assert on
            done.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "reading a FIFO key file hung"
    assert isinstance(done[0], InsecureFileError)
    assert "not a regular file" in str(done[0])
    folder = tmp_path / "dir.key"
    folder.mkdir(mode=0o700)
    with pytest.raises(InsecureFileError, match="not a regular file"):
        read_private(folder)


def test_a_missing_key_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_private(tmp_path / "missing.key")


# --- open_private_new / atomic_write ----------------------------------------------------------------


def test_open_private_new_creates_0600_and_never_follows_a_link(
    tmp_path: Path, victim: Path, no_umask: None
) -> None:
    path = tmp_path / "new"
    with open_private_new(path) as fh:
        fh.write(b"x")
    assert _mode(path) == 0o600
    assert path.read_bytes() == b"x"
    with pytest.raises(FileExistsError):
        open_private_new(path)
    link = _plant(tmp_path / "link", victim)
    with pytest.raises(FileExistsError):
        open_private_new(link)
    assert victim.read_bytes() == SECRET
    dangling = _plant(tmp_path / "dangling", tmp_path / "elsewhere" / "created-by-link")
    with pytest.raises(FileExistsError):
        open_private_new(dangling)
    assert not (tmp_path / "elsewhere" / "created-by-link").exists()


def test_atomic_write_is_0600_whatever_the_umask(tmp_path: Path, no_umask: None) -> None:
    path = tmp_path / "out.json"
    atomic_write(path, b"one")
    assert _mode(path) == 0o600
    path.chmod(0o644)
    atomic_write(path, b"two")  # a replacement is a new file: 0600 again, not the old mode
    assert path.read_bytes() == b"two"
    assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_write_takes_a_public_mode_when_asked(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "public.json", b"{}", mode=0o644)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "public.json") == 0o644


def test_atomic_write_replaces_a_link_at_the_destination_and_ignores_old_temp_names(
    tmp_path: Path, victim: Path
) -> None:
    path = tmp_path / "report.json"
    _plant(path, victim)
    for name in ("report.json.tmp", ".report.json.tmp", "report.tmp", "report.json.partial"):
        _plant(tmp_path / name, victim)
    atomic_write(path, b"new")
    assert victim.read_bytes() == SECRET
    assert not path.is_symlink()
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o600


def test_a_failed_write_leaves_the_destination_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"before")

    def write_half() -> None:
        with atomic_writer(path) as fh:
            fh.write(b"half")
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_half()
    assert path.read_bytes() == b"before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- ensure_private_file / open_private_existing ----------------------------------------------------


def test_ensure_private_file_creates_an_empty_0600_file(tmp_path: Path, no_umask: None) -> None:
    path = tmp_path / "store.sqlite"
    assert ensure_private_file(path) is True
    assert path.read_bytes() == b""
    assert _mode(path) == 0o600
    path.write_bytes(b"data")
    assert ensure_private_file(path) is False
    assert path.read_bytes() == b"data"


def test_ensure_private_file_refuses_a_link(tmp_path: Path, victim: Path) -> None:
    victim.chmod(0o600)
    link = _plant(tmp_path / "store.sqlite", victim)
    with pytest.raises(InsecureFileError) as err:
        ensure_private_file(link)
    assert str(link) in str(err.value)
    assert "symbolic link" in str(err.value)
    assert victim.read_bytes() == SECRET
    dangling = _plant(tmp_path / "other.sqlite", tmp_path / "elsewhere" / "new.sqlite")
    with pytest.raises(InsecureFileError, match="symbolic link"):
        ensure_private_file(dangling)
    assert not (tmp_path / "elsewhere" / "new.sqlite").exists()


def test_ensure_private_file_refuses_a_file_open_to_others(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    path.write_bytes(b"data")
    path.chmod(0o644)
    with pytest.raises(InsecureFileError) as err:
        ensure_private_file(path)
    _assert_refused_mode(err, path, 0o644)
    assert path.read_bytes() == b"data"
    assert _mode(path) == 0o644  # reported, not silently changed


def test_ensure_private_file_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.sqlite"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(InsecureFileError, match="not a regular file"):
        ensure_private_file(fifo)
    folder = tmp_path / "dir.sqlite"
    folder.mkdir(mode=0o700)
    with pytest.raises(InsecureFileError, match="not a regular file"):
        ensure_private_file(folder)


def test_open_private_existing_refuses_a_link(tmp_path: Path, victim: Path) -> None:
    victim.chmod(0o600)
    link = _plant(tmp_path / "spool", victim)
    with pytest.raises(InsecureFileError, match="symbolic link"):
        open_private_existing(link)
    assert victim.read_bytes() == SECRET


# --- agency key files ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids=lambda m: f"{m:04o}")
def test_an_agency_key_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    """Plain or passphrase-protected, a key others may read is refused before it is parsed."""
    ident = AgencyIdentity.generate("cst")
    key = tmp_path / "cst.key"
    ident.save(key)
    key.chmod(mode)
    with pytest.raises(InsecureFileError) as err:
        AgencyIdentity.load(key)
    _assert_refused_mode(err, key, mode)
    key.chmod(0o600)
    assert AgencyIdentity.load(key).public == ident.public


def test_a_passphrase_protected_key_open_to_others_is_refused(tmp_path: Path) -> None:
    from nacl.pwhash import argon2id  # noqa: PLC0415 - only this test needs the limits

    key = tmp_path / "cst.key"
    AgencyIdentity.generate("cst").save(
        key,
        passphrase=b"pw",
        opslimit=argon2id.OPSLIMIT_MIN,
        memlimit=argon2id.MEMLIMIT_MIN,
    )
    key.chmod(0o640)
    with pytest.raises(InsecureFileError, match="chmod 600"):
        AgencyIdentity.load(key, passphrase=b"pw")


def test_saving_a_key_never_writes_through_a_link(
    tmp_path: Path, victim: Path, no_umask: None
) -> None:
    ident = AgencyIdentity.generate("cst")
    link = _plant(tmp_path / "cst.key", victim)
    with pytest.raises(FileExistsError):
        ident.save(link)
    assert victim.read_bytes() == SECRET
    missing = tmp_path / "elsewhere" / "planted.key"
    dangling = _plant(tmp_path / "gmp.key", missing)
    with pytest.raises(FileExistsError):
        ident.save(dangling)
    assert not missing.exists()
    ident.save(tmp_path / "real.key")
    assert _mode(tmp_path / "real.key") == 0o600


def test_directory_sign_refuses_an_admin_key_open_to_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`intelbus directory sign` says which file, its mode and the fix, and signs nothing."""
    from typer.testing import CliRunner  # noqa: PLC0415 - only this test drives the CLI

    from intelbus.cli.main import app  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "new", "--agency", "admin-a", "--out", "keys"])
    assert made.exit_code == 0, made.output
    folder = Path("directory")
    folder.mkdir()
    draft = folder / dstore.DRAFT
    draft.write_bytes(b"{}")
    Path("keys/admin-a.key").chmod(0o644)
    res = runner.invoke(app, ["directory", "sign", "--key", "keys/admin-a.key"])
    assert res.exit_code != 0
    flat = " ".join(res.output.split())
    assert "keys/admin-a.key" in flat
    assert "0644" in flat
    assert "chmod 600 keys/admin-a.key" in flat
    assert draft.read_bytes() == b"{}"


# --- TLS keys and certificates ------------------------------------------------------------------


def test_a_ca_key_open_to_others_is_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "tls")
    key = ca.folder / "ca.key"
    key.chmod(0o644)
    with pytest.raises(InsecureFileError) as err:
        CertificateAuthority.load(ca.folder)
    _assert_refused_mode(err, key, 0o644)
    key.chmod(0o600)
    assert CertificateAuthority.load(ca.folder).cert == ca.cert


def test_issuing_never_writes_through_planted_links(
    tmp_path: Path, victim: Path, no_umask: None
) -> None:
    ca = CertificateAuthority.create(tmp_path / "tls")
    clients = ca.folder / "clients"
    clients.mkdir()
    for name in ("cst.key", ".cst.key.tmp", "cst.pem", ".cst.pem.tmp"):
        _plant(clients / name, victim)
    issued = ca.issue_agency("cst")
    assert victim.read_bytes() == SECRET
    assert not issued.key_file.is_symlink()
    assert _mode(issued.key_file) == 0o600
    assert not issued.cert_file.is_symlink()
    assert b"BEGIN CERTIFICATE" in issued.cert_file.read_bytes()


# --- directory documents ------------------------------------------------------------------------


def test_directory_documents_never_follow_a_link(tmp_path: Path, victim: Path) -> None:
    admin = AgencyIdentity.generate("admin-a")
    doc = edit.initial(
        environment="demo",
        admin_keys=[edit.admin_key(admin.sign_public, admin.agency_id)],
        threshold=1,
        now=datetime.now(UTC),
    )
    path = tmp_path / dstore.DRAFT
    _plant(path, victim)
    _plant(tmp_path / "draft.tmp", victim)  # the fixed temporary name used before
    old = os.umask(0o022)
    try:
        dstore.write_file(path, doc)
    finally:
        os.umask(old)
    assert victim.read_bytes() == SECRET
    assert not path.is_symlink()
    assert _mode(path) == 0o644  # directory documents are public
    assert dstore.load_file(path).signed.version == doc.signed.version


# --- audit checkpoints and reports --------------------------------------------------------------


def _checkpoint() -> cp.Checkpoint:
    return cp.Checkpoint(
        topic="t",
        environment="demo",
        directory_version=1,
        baseline_first_sight=False,
        positions={0: (0, 10)},
        state={},
        findings_bytes=0,
        findings_digest="00" * 32,
        complete=False,
    )


def test_checkpoints_are_0600_and_never_follow_a_link(
    tmp_path: Path, victim: Path, no_umask: None
) -> None:
    path = tmp_path / "audit.ckpt"
    _plant(path, victim)
    _plant(tmp_path / "audit.ckpt.tmp", victim)  # the fixed temporary name used before
    auditor = AgencyIdentity.generate("inspectorate")
    cp.save(path, cp.signed(_checkpoint(), auditor))
    assert victim.read_bytes() == SECRET
    assert not path.is_symlink()
    assert _mode(path) == 0o600
    loaded = cp.load(path, key=auditor.public, topic="t", environment="demo", directory_version=1)
    assert loaded == _checkpoint()


def _finding(offset: int) -> Finding:
    return Finding("t", 0, offset, ReasonCode.CHAIN_GAP, f"gap at {offset}")


def test_reports_and_spools_are_0600_and_never_follow_a_link(
    tmp_path: Path, victim: Path, no_umask: None
) -> None:
    spool_path = _plant(tmp_path / "audit.ckpt.findings.jsonl", victim)
    spool = FindingSpool(spool_path)
    try:
        spool.write(_finding(1))
        spool.write(_finding(2))
        spool.sync()
        assert victim.read_bytes() == SECRET
        assert not spool_path.is_symlink()
        assert _mode(spool_path) == 0o600
        report = _plant(tmp_path / "report.json", victim)
        _plant(tmp_path / "report.json.tmp", victim)  # the fixed temporary name used before
        write_report(report, {"verdict": "x"}, {"seconds": 0}, spool)
        assert [f.offset for f in spool.findings()] == [1, 2]
    finally:
        spool.close()
    assert victim.read_bytes() == SECRET
    assert not report.is_symlink()
    assert _mode(report) == 0o600
    assert [f["offset"] for f in json.loads(report.read_text())["findings"]] == [1, 2]


def test_a_resumed_spool_is_cut_back_and_must_not_be_a_link(tmp_path: Path, victim: Path) -> None:
    path = tmp_path / "findings.jsonl"
    spool = FindingSpool(path)
    spool.write(_finding(1))
    kept = spool.sync()
    spool.write(_finding(2))
    spool.close()
    resumed = FindingSpool(path, resume_at=kept)
    try:
        assert [f.offset for f in resumed.findings()] == [1]
    finally:
        resumed.close()
    victim.chmod(0o600)
    path.unlink()
    _plant(path, victim)
    with pytest.raises(InsecureFileError, match="symbolic link"):
        FindingSpool(path, resume_at=0)
    assert victim.read_bytes() == SECRET


# --- exports ------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
_FORMULA = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")

# Each text becomes one record's address; the export must keep each on exactly one CSV row and
# leave no line of any cell that a spreadsheet could start a formula with.
NASTY = (
    "lone\rcarriage return",
    "\r=cmd|' /C calc'!A0",
    "line\nfeed",
    "crlf\r\nthen more",
    'first line\n=HYPERLINK("http://x")',
    "first\r\n+1+1",
    "first\r-2",
    "a\n@SUM(1)",
    " =leading space",
    "\t=tab then formula",
    "\u00a0\u200b=nbsp and zero-width",
    "x\n  \t=indented on a later line",
    "x\u2028=after a line separator",
    "\uff1dfull-width",
    'x;=HYPERLINK("http://y")',
    "\r",
    "\n",
    "\r\n",
    "=cmd",
)


def _view(n: int, address: str) -> StoredRecordView:
    return StoredRecordView(
        record_id=f"00000000-0000-4000-8000-{n:012d}",
        topic="intelbus.sightings",
        partition=0,
        offset=n,
        producer_id="cst",
        kind="sighting",
        sequence=n,
        digest=bytes(32),
        created_at=T0,
        appended_at=T0,
        policy_hash="a" * 64,
        rule_id="all",
        action="store",
        redacted_fields=("=x", "y\r=z"),
        tlp="TLP:GREEN",
        classification="OFFICIAL",
        force_area="hertfordshire",
        occurred_at=T0,
        payload={"place": {"address_or_area": address, "site_kind": "-1"}},
        version=1,
        status="live",
    )


def _first_visible(line: str) -> str:
    return next((c for c in line if not (c.isspace() or c in _INVISIBLE)), "")


def _assert_no_formula(cell: str) -> None:
    for line in cell.splitlines():
        assert _first_visible(line) not in _FORMULA or line.startswith("'"), repr(cell)
        assert not line.startswith("\t"), repr(cell)


def test_csv_keeps_one_row_per_record_and_neutralises_every_line() -> None:
    views = [_view(i, text) for i, text in enumerate(NASTY)]
    out = io.StringIO(newline="")
    assert write_csv(views, out) == len(NASTY)
    text = out.getvalue()
    assert "\r" not in text  # line breaks inside cells are written as LF, consistently
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == list(CSV_COLUMNS)
    assert len(rows) == 1 + len(NASTY)
    col = CSV_COLUMNS.index("address_or_area")
    for i, row in enumerate(rows[1:]):
        assert len(row) == len(CSV_COLUMNS)
        assert row[0] == views[i].record_id
        # The text survives, apart from LF for CR/CRLF and the apostrophes.
        expected = NASTY[i].replace("\r\n", "\n").replace("\r", "\n")
        assert row[col].replace("'", "") == expected.replace("'", "")
        for cell in row:
            _assert_no_formula(cell)
    # A lone CR used to end the row in the middle of the cell; a formula on a later line was kept.
    assert rows[1][col] == "lone\ncarriage return"
    assert rows[2][col] == "\n'=cmd|' /C calc'!A0"
    assert rows[5][col] == 'first line\n\'=HYPERLINK("http://x")'
    assert rows[9][col] == "' =leading space"
    assert rows[10][col] == "'\t=tab then formula"
    assert rows[19][col] == "'=cmd"
    assert rows[1][CSV_COLUMNS.index("redacted_fields")] == "'=x;y\n'=z"
    # Every cell is quoted, so a reader splitting on ";" cannot start a cell with "=".
    assert '"x;=HYPERLINK(""http://y"")"' in text
    assert text.split("\n")[0] == ",".join(f'"{c}"' for c in CSV_COLUMNS)


def test_an_export_file_is_0600_and_replaces_a_planted_link(
    tmp_path: Path, victim: Path, no_umask: None
) -> None:
    out = tmp_path / "export.csv"
    _plant(out, victim)
    _plant(tmp_path / "export.csv.partial", victim)  # the fixed temporary name used before
    views = [_view(i, text) for i, text in enumerate(NASTY)]
    assert write_export_file(out, lambda fh: write_csv(views, fh)) == len(NASTY)
    assert victim.read_bytes() == SECRET
    assert not out.is_symlink()
    assert _mode(out) == 0o600
    with out.open(newline="", encoding="utf-8") as fh:
        assert len(list(csv.reader(fh))) == 1 + len(NASTY)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "elsewhere",
        "export.csv",
        "export.csv.partial",
    ]


def test_a_failed_export_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "export.jsonl"

    def boom(fh):
        fh.write("half a record")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_export_file(out, boom)
    assert list(tmp_path.iterdir()) == []
