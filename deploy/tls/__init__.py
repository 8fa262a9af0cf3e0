"""The bus's private certificate authority: client certificates per agency, broker certificates."""

from deploy.tls.certs import (
    ADMIN_PRINCIPAL,
    BROKER_PRINCIPAL,
    PRINCIPAL_MAPPING_RULES,
    CertError,
    CertificateAuthority,
    IssuedCert,
)

__all__ = [
    "ADMIN_PRINCIPAL",
    "BROKER_PRINCIPAL",
    "PRINCIPAL_MAPPING_RULES",
    "CertError",
    "CertificateAuthority",
    "IssuedCert",
]
