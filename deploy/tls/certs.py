"""A private CA for the bus, and the certificates it issues (PEM, keys 0600, via ``cryptography``).

Layout of a TLS folder::

    <tls>/ca.pem  ca.key                         the CA (its key never leaves this folder)
    <tls>/clients/<agency>.pem  <agency>.key      one client certificate per agency (CN = agency id)
    <tls>/clients/admin.pem  admin.key            the operator's certificate (a Kafka super user)
    <tls>/brokers/broker.pem  broker.key          the brokers' certificate (SANs: loopback + hosts)
    <tls>/brokers/broker.keystore.pem             key + chain in one file, Kafka's PEM keystore

Subjects are ``CN=<name>,OU=<agency|operator|broker>,O=intelbus``. The brokers' principal mapping
(:data:`PRINCIPAL_MAPPING_RULES`) turns such a certificate into ``User:<name>``; any other subject
keeps its full DN as the principal and so matches no ACL. The names ``admin`` and ``broker`` are
super users, so no agency may be issued a certificate under them.

Keys are ECDSA P-256: fast to make and to handshake with, and both Java's PEM keystore and
Python's ``ssl`` accept them. Kafka does not check revocation lists; access is revoked by removing
the agency's ACLs (see docs/operations.md).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from intelbus.directory.model import AGENCY_ID_PATTERN
from intelbus.errors import IntelbusError
from intelbus.files import PRIVATE_MODE, atomic_write, read_private
from intelbus.transport.security import SecurityMode, TlsFiles, TransportSecurity

ORGANISATION = "intelbus"
BROKER_PRINCIPAL = "broker"
ADMIN_PRINCIPAL = "admin"
RESERVED_NAMES = frozenset({BROKER_PRINCIPAL, ADMIN_PRINCIPAL})
# Kafka matches this against the RFC 2253 subject, e.g. "CN=cst,OU=agency,O=intelbus".
PRINCIPAL_MAPPING_RULES = (
    r"RULE:^CN=([a-z0-9][a-z0-9._-]*),OU=(agency|operator|broker),O=intelbus$/$1/,DEFAULT"
)
CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=397)  # the CA/Browser limit; rotate yearly
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")
_AGENCY_ID = re.compile(AGENCY_ID_PATTERN)


class CertError(IntelbusError):
    """A certificate could not be issued or loaded (bad name, missing CA, existing CA...)."""


class Kind(enum.StrEnum):
    """What a certificate is for; it becomes the subject's OU."""

    AGENCY = "agency"
    OPERATOR = "operator"
    BROKER = "broker"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """Where an issued certificate and its key were written (paths only, never key material)."""

    name: str
    kind: Kind
    cert_file: Path  # the leaf followed by the CA certificate
    key_file: Path  # PKCS#8, unencrypted, mode 0600
    ca_file: Path
    serial: int
    not_after: datetime

    def client_security(self, mode: SecurityMode = SecurityMode.REQUIRED) -> TransportSecurity:
        """Client settings that present this certificate and trust this CA."""
        return TransportSecurity(mode, TlsFiles(self.ca_file, self.cert_file, self.key_file))


class CertificateAuthority:
    """The bus's CA, held in memory only while issuing. ``repr`` shows the subject, not the key."""

    def __init__(
        self, folder: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> None:
        self.folder = folder
        self.cert = cert
        self._key = key

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.cert.subject.rfc4514_string()!r}, folder={self.folder})"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    # -- creating and loading ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        folder: Path,
        *,
        name: str = "intelbus CA",
        now: datetime | None = None,
        validity: timedelta = CA_VALIDITY,
    ) -> CertificateAuthority:
        """Make a new CA in ``folder`` (``ca.pem`` and a 0600 ``ca.key``).

        Raises:
            CertError: the folder already holds a CA (replacing it would orphan every certificate).
        """
        if (folder / "ca.key").exists() or (folder / "ca.pem").exists():
            raise CertError(f"{folder} already holds a CA; load it instead of replacing it")
        start = _now(now)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - timedelta(minutes=5))
            .not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        folder.mkdir(parents=True, exist_ok=True)
        _write_private(folder / "ca.key", _key_pem(key))
        _write_public(folder / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
        return cls(folder, cert, key)

    @classmethod
    def load(cls, folder: Path) -> CertificateAuthority:
        """The CA in ``folder``.

        Raises:
            CertError: missing, unreadable, or the key does not match the certificate.
            InsecureFileError: group or others may access ``ca.key`` (a ConfigError).
        """
        try:
            cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
            key_pem = read_private(folder / "ca.key", what="CA key file")
            key = serialization.load_pem_private_key(key_pem, None)
        except (OSError, ValueError) as e:
            raise CertError(f"no usable CA in {folder}: {type(e).__name__}") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise CertError(f"the CA key in {folder} does not match ca.pem")
        return cls(folder, cert, key)

    @classmethod
    def open_or_create(cls, folder: Path) -> CertificateAuthority:
        """Load the CA in ``folder``, or create one if the folder holds none."""
        if (folder / "ca.pem").exists():
            return cls.load(folder)
        return cls.create(folder)

    # -- issuing ----------------------------------------------------------------------------------

    def issue_agency(
        self, agency_id: str, *, now: datetime | None = None, validity: timedelta = LEAF_VALIDITY
    ) -> IssuedCert:
        """A client certificate with CN = ``agency_id``, written under ``clients/``.

        Re-issuing (rotation) replaces the files; the old certificate stays valid at the brokers
        until it expires, so revoke access through ACLs, not by re-issuing.

        Raises:
            CertError: the id is not a valid agency id, or is a reserved super-user name.
        """
        check_agency_id(agency_id)
        return self._issue(agency_id, Kind.AGENCY, (), now, validity, self.folder / "clients")

    def issue_admin(
        self, *, now: datetime | None = None, validity: timedelta = LEAF_VALIDITY
    ) -> IssuedCert:
        """The operator's client certificate (``User:admin``, a super user: guard it)."""
        return self._issue(
            ADMIN_PRINCIPAL, Kind.OPERATOR, (), now, validity, self.folder / "clients"
        )

    def issue_broker(
        self,
        hosts: Sequence[str] = (),
        *,
        now: datetime | None = None,
        validity: timedelta = LEAF_VALIDITY,
    ) -> IssuedCert:
        """The brokers' certificate (``User:broker``) with SANs for loopback and ``hosts``.

        All brokers share it: they are one principal to the authorizer, and a client checks only
        that the host it dialled is among the SANs. Also writes ``broker.keystore.pem``.
        """
        names = tuple(dict.fromkeys((*LOOPBACK_HOSTS, *hosts)))
        issued = self._issue(
            BROKER_PRINCIPAL, Kind.BROKER, names, now, validity, self.folder / "brokers"
        )
        keystore = read_private(issued.key_file) + issued.cert_file.read_bytes()
        _write_private(issued.key_file.with_name("broker.keystore.pem"), keystore)
        return issued

    def issue_server(
        self,
        name: str,
        hosts: Sequence[str] = (),
        *,
        now: datetime | None = None,
        validity: timedelta = LEAF_VALIDITY,
    ) -> IssuedCert:
        """A certificate for a service other than Kafka (the TAXII server), SANs for loopback and
        ``hosts``, written under ``servers/``.

        It is good for serving TLS only (extended key usage serverAuth, not clientAuth), so its
        key, which sits on a force's host, can neither act as a broker nor log in to one; the
        brokers' key stays on the brokers.
        """
        check_agency_id(name)  # the same plain-name rule: it becomes a file name and a CN
        names = tuple(dict.fromkeys((*LOOPBACK_HOSTS, *hosts)))
        return self._issue(name, Kind.SERVER, names, now, validity, self.folder / "servers")

    def _issue(  # noqa: PLR0917 - private; every caller passes all six
        self,
        name: str,
        kind: Kind,
        hosts: Sequence[str],
        now: datetime | None,
        validity: timedelta,
        out: Path,
    ) -> IssuedCert:
        start = _now(now)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind.value),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if kind is Kind.BROKER:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)  # brokers also dial each other
        elif kind is Kind.SERVER:
            usages = [ExtendedKeyUsageOID.SERVER_AUTH]  # serves TLS; never a client of the bus
        ca_public = self.cert.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - timedelta(minutes=5))
            .not_valid_after(min(start + validity, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public),  # type: ignore[arg-type]
                critical=False,
            )
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        out.mkdir(parents=True, exist_ok=True)
        key_file = out / f"{name}.key"
        cert_file = out / f"{name}.pem"
        _write_private(key_file, _key_pem(key))
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert.public_bytes(
            serialization.Encoding.PEM
        )
        _write_public(cert_file, chain)
        return IssuedCert(
            name=name,
            kind=kind,
            cert_file=cert_file,
            key_file=key_file,
            ca_file=self.ca_file,
            serial=cert.serial_number,
            not_after=cert.not_valid_after_utc,
        )


def check_agency_id(agency_id: str) -> None:
    """Refuse ids that are not agency ids, or that would map to a super user's principal.

    Raises:
        CertError: the id is invalid or reserved.
    """
    if not _AGENCY_ID.fullmatch(agency_id):
        raise CertError(f"{agency_id!r} is not a valid agency id")
    if agency_id in RESERVED_NAMES:
        raise CertError(f"{agency_id!r} is reserved for a super user; pick another agency id")


def read_certificate(path: Path) -> x509.Certificate:
    """The first (leaf) certificate of a PEM file.

    Raises:
        CertError: unreadable or not a certificate.
    """
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as e:
        raise CertError(f"cannot read certificate {path}: {type(e).__name__}") from e


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8 is what Kafka's PEM keystore requires; unencrypted, so the file mode protects it.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the first byte (never written wider, then narrowed) under a unique name,
    # never through a link, and renamed over ``path``.
    atomic_write(path, data, mode=PRIVATE_MODE)


def _write_public(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=0o644)
