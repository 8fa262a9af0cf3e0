"""The bus's CA and certificates, and the client TLS settings built from configs and environment."""

from __future__ import annotations

import re
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from consumers.config import ConsumerConfig
from deploy.tls.certs import (
    PRINCIPAL_MAPPING_RULES,
    CertError,
    CertificateAuthority,
    IssuedCert,
    read_certificate,
)
from intelbus.errors import ConfigError
from intelbus.transport.security import (
    ENV_CA,
    ENV_CERT,
    ENV_KEY,
    ENV_SECURITY,
    SecurityMode,
    TlsConfig,
    TransportSecurity,
)
from producers.config import ProducerConfig


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("tls"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _kafka_principal(dn: str) -> str:
    """Apply the brokers' principal mapping the way Kafka does (first matching rule, else DEFAULT)."""
    rule = re.fullmatch(r"RULE:(.*)/\$1/,DEFAULT", PRINCIPAL_MAPPING_RULES)
    assert rule is not None
    found = re.match(rule.group(1), dn)
    return found.group(1) if found else dn


def test_ca_is_a_ca_with_a_private_key_file(ca: CertificateAuthority) -> None:
    """ca.pem is a CA certificate (path length 0); ca.key is 0600; repr holds no key material."""
    cert = read_certificate(ca.ca_file)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True
    assert constraints.path_length == 0
    assert _mode(ca.folder / "ca.key") == 0o600
    assert "PRIVATE" not in repr(ca)
    assert CertificateAuthority.load(ca.folder).cert == ca.cert


def test_creating_a_second_ca_in_the_same_folder_is_refused(ca: CertificateAuthority) -> None:
    """Replacing the CA would orphan every certificate it issued."""
    with pytest.raises(CertError, match="already holds a CA"):
        CertificateAuthority.create(ca.folder)


def test_agency_certificate_names_the_agency_and_maps_to_its_principal(
    ca: CertificateAuthority,
) -> None:
    """CN = agency id; the brokers' mapping rule turns the subject into exactly that id."""
    issued = ca.issue_agency("herts-police")
    cert = read_certificate(issued.cert_file)
    assert cert.subject.rfc4514_string() == "CN=herts-police,OU=agency,O=intelbus"
    assert _kafka_principal(cert.subject.rfc4514_string()) == "herts-police"
    cert.verify_directly_issued_by(ca.cert)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _mode(issued.key_file) == 0o600
    # The cert file carries the chain: the leaf, then the CA.
    assert issued.cert_file.read_bytes().count(b"BEGIN CERTIFICATE") == 2


def test_broker_certificate_has_loopback_and_configured_sans(ca: CertificateAuthority) -> None:
    """SANs cover 127.0.0.1, localhost and every configured host; the PEM keystore is 0600."""
    issued = ca.issue_broker(["kafka-1.example.org", "10.0.0.7"])
    cert = read_certificate(issued.cert_file)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.0.0.7",
    }
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "kafka-1.example.org"}
    assert _kafka_principal(cert.subject.rfc4514_string()) == "broker"
    keystore = issued.key_file.with_name("broker.keystore.pem")
    assert _mode(keystore) == 0o600
    assert b"BEGIN PRIVATE KEY" in keystore.read_bytes()  # PKCS#8, as Kafka's PEM store wants


@pytest.mark.parametrize("name", ["admin", "broker", "Not_An_Id", "x"])
def test_reserved_or_invalid_agency_ids_are_refused(ca: CertificateAuthority, name: str) -> None:
    """No agency may hold a super user's name, and ids follow the directory's pattern."""
    with pytest.raises(CertError):
        ca.issue_agency(name)


def test_foreign_subject_keeps_its_full_dn_as_principal() -> None:
    """A subject outside the bus's naming maps to its whole DN, which matches no ACL."""
    dn = "CN=cst,OU=agency,O=evil"
    assert _kafka_principal(dn) == dn


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """A real TLS handshake over a socket pair; raises ssl.SSLError on the client side if refused."""
    left, right = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(right, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as e:
            errors.append(e)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(left, server_hostname="127.0.0.1") as c:
            c.sendall(b"x")
            c.recv(1)  # TLS 1.3 reports a refused client certificate on the first read
    finally:
        thread.join(5)
        left.close()
        right.close()
    if errors:
        raise errors[0]


def _server(ca: CertificateAuthority, broker: IssuedCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(broker.cert_file, broker.key_file)
    ctx.load_verify_locations(ca.ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED  # what ssl.client.auth=required does
    return ctx


def _client(ca_file: Path, cert: IssuedCert | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        ctx.load_cert_chain(cert.cert_file, cert.key_file)
    return ctx


def test_certificates_complete_a_mutual_tls_handshake_and_strangers_do_not(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """Our agency cert is accepted by a server holding our broker cert; another CA's is not."""
    broker = ca.issue_broker()
    server = _server(ca, broker)
    _handshake(server, _client(ca.ca_file, ca.issue_agency("cst")))
    foreign = CertificateAuthority.create(tmp_path / "foreign").issue_agency("cst")
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(_server(ca, broker), _client(ca.ca_file, foreign))
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(_server(ca, broker), _client(ca.ca_file, None))


# --- Client settings. -------------------------------------------------------------------------------


def test_required_without_a_certificate_is_refused_with_the_reason() -> None:
    """security = "required" never falls back to plaintext; the error says what to set."""
    with pytest.raises(ConfigError, match=r"(?s)required.*cert_file.*plaintext"):
        TransportSecurity.build(mode=SecurityMode.REQUIRED, environ={})


def test_plaintext_only_when_optional_and_nothing_configured() -> None:
    assert TransportSecurity.build(environ={}).client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_environment_can_require_tls_but_not_relax_it(ca: CertificateAuthority) -> None:
    """INTELBUS_SECURITY=required tightens an optional config; =optional cannot loosen required."""
    with pytest.raises(ConfigError):
        TransportSecurity.build(environ={ENV_SECURITY: "required"})
    with pytest.raises(ConfigError):
        TransportSecurity.build(mode=SecurityMode.REQUIRED, environ={ENV_SECURITY: "optional"})
    with pytest.raises(ConfigError, match="expected"):
        TransportSecurity.build(environ={ENV_SECURITY: "sometimes"})


def test_environment_supplies_and_overrides_tls_files(ca: CertificateAuthority) -> None:
    """INTELBUS_TLS_* give a full client certificate; the kwargs are kafka-python's SSL settings."""
    gmp = ca.issue_agency("gmp")
    cst = ca.issue_agency("cst")
    section = TlsConfig(ca_file=cst.ca_file, cert_file=cst.cert_file, key_file=cst.key_file)
    env = {ENV_CA: str(gmp.ca_file), ENV_CERT: str(gmp.cert_file), ENV_KEY: str(gmp.key_file)}
    kwargs = TransportSecurity.build(mode=SecurityMode.REQUIRED, tls=section, environ=env)
    assert kwargs.client_kwargs() == {
        "security_protocol": "SSL",
        "ssl_cafile": str(gmp.ca_file),
        "ssl_certfile": str(gmp.cert_file),
        "ssl_keyfile": str(gmp.key_file),
        "ssl_check_hostname": True,
    }


def test_partial_tls_settings_are_refused(ca: CertificateAuthority) -> None:
    """A certificate without its key is a mistake, not a reason to go plaintext."""
    issued = ca.issue_agency("met-police")
    with pytest.raises(ConfigError, match="incomplete"):
        TransportSecurity.build(tls=TlsConfig(cert_file=issued.cert_file), environ={})


def test_key_readable_by_others_is_refused(ca: CertificateAuthority) -> None:
    issued = ca.issue_agency("leaky")
    issued.key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        issued.client_security()


def test_configs_read_a_tls_section_relative_to_the_file(
    ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Producer and consumer configs take security + [tls]; required without [tls] fails at load."""
    for var in (ENV_SECURITY, ENV_CA, ENV_CERT, ENV_KEY):
        monkeypatch.delenv(var, raising=False)
    issued = ca.issue_agency("herts")
    common = 'key_file = "k"\ndirectory = "d"\nenvironment = "demo"\n'
    tls = (
        f'security = "required"\n[tls]\nca_file = "{issued.ca_file}"\n'
        f'cert_file = "{issued.cert_file}"\nkey_file = "{issued.key_file.name}"\n'
    )
    # key_file in [tls] is relative: it resolves against the config file's folder.
    issued.key_file.rename(tmp_path / issued.key_file.name)
    consumer = tmp_path / "consumer.toml"
    consumer.write_text(f'agency = "herts"\n{common}policy = "p"\nstore = "s"\n{tls}')
    security = ConsumerConfig.load(consumer).transport_security()
    assert security.tls is not None
    assert security.tls.key_file == tmp_path / issued.key_file.name
    producer = tmp_path / "producer.toml"
    producer.write_text(
        f'agency = "cst"\n{common}agreement = "a"\nstate_file = "s"\nsecurity = "required"\n'
    )
    with pytest.raises(ConfigError, match="plaintext"):
        ProducerConfig.load(producer)
    producer.write_text(f'agency = "cst"\n{common}agreement = "a"\nstate_file = "s"\n')
    assert ProducerConfig.load(producer).transport_security().tls is None


def test_cli_issues_broker_admin_and_agency_certificates_once(tmp_path: Path) -> None:
    """`intelbus deploy certs` makes the CA, broker, admin and agency certs; a rerun keeps them."""
    from typer.testing import CliRunner  # noqa: PLC0415 - only this test drives the CLI

    from intelbus.cli.main import app  # noqa: PLC0415

    tls = tmp_path / "tls"
    args = ["deploy", "certs", "--tls-dir", str(tls), "--agency", "cst", "--agency", "gmp"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    names = {"brokers/broker.pem", "clients/admin.pem", "clients/cst.pem", "clients/gmp.pem"}
    assert all((tls / n).is_file() for n in names)
    assert all(_mode(k) == 0o600 for k in tls.rglob("*.key"))
    serial = read_certificate(tls / "clients" / "cst.pem").serial_number
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "nothing to issue" in again.output
    assert serial == read_certificate(tls / "clients" / "cst.pem").serial_number
    refused = CliRunner().invoke(
        app, ["deploy", "certs", "--tls-dir", str(tls), "--agency", "admin"]
    )
    assert refused.exit_code == 2


def test_server_certificate_serves_tls_only_with_its_sans(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """`deploy certs --server taxii --server-host taxii.herts.example`: serverAuth alone (its key,
    on a force's host, cannot be a Kafka client or a broker), loopback and the host among its
    SANs, key 0600; a TLS client that trusts the bus CA accepts it for that host name."""
    from typer.testing import CliRunner  # noqa: PLC0415 - only these tests drive the CLI

    from intelbus.cli.main import app  # noqa: PLC0415

    tls = tmp_path / "tls"
    args = ["deploy", "certs", "--tls-dir", str(tls), "--server", "taxii"]
    done = CliRunner().invoke(app, [*args, "--server-host", "taxii.herts.example"])
    assert done.exit_code == 0, done.output
    cert = read_certificate(tls / "servers" / "taxii.pem")
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "taxii.herts.example"}
    assert _mode(tls / "servers" / "taxii.key") == 0o600
    # A client checking the host name against the bus CA accepts it.
    client = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(tls / "servers" / "taxii.pem"), str(tls / "servers" / "taxii.key"))
    a, b = socket.socketpair()
    result: dict[str, object] = {}

    def serve() -> None:
        with server.wrap_socket(a, server_side=True) as s:
            result["ok"] = s.recv(1)

    t = threading.Thread(target=serve)
    t.start()
    with client.wrap_socket(b, server_hostname="taxii.herts.example") as c:
        c.sendall(b"x")
    t.join(5)
    assert result["ok"] == b"x"
    invalid = CliRunner().invoke(app, ["deploy", "certs", "--tls-dir", str(tls), "--server", "a b"])
    assert invalid.exit_code == 2
