"""Certificates for the stand-in: its own CA, a serving certificate, client certificates.

kube-apiserver authenticates a client certificate signed by its ``--client-ca-file``
as the user named by the subject's common name, in the groups named by its
organizations (``staging/src/k8s.io/apiserver/pkg/authentication/request/x509/x509.go``,
``CommonNameUserConversion``). The stand-in uses one CA for both its serving and its
client certificates, so a kubeconfig needs a single ``certificate-authority-data``.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes


class CertificateAuthority:
    """A throw-away CA that signs the serving certificate and client certificates."""

    def __init__(self, common_name: str = "kproxy-standin-ca") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = _builder(self._name, self._key.public_key(), self._name)
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        ).add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        self.cert = builder.sign(self._key, hashes.SHA256())
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue_server(
        self, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    ) -> KeyPair:
        """Sign a serving certificate valid for the given DNS names and IP addresses."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        names = [_alternative_name(host) for host in hosts]
        builder = _builder(subject, key.public_key(), self._name)
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        return self._sign(builder, key)

    def issue_client(self, username: str, groups: tuple[str, ...] = ()) -> KeyPair:
        """Sign a client certificate that authenticates as ``username`` in ``groups``."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, username)]
        attributes += [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups
        ]
        builder = _builder(x509.Name(attributes), key.public_key(), self._name)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        return self._sign(builder, key)

    def _sign(
        self, builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey
    ) -> KeyPair:
        cert = builder.sign(self._key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def _builder(
    subject: x509.Name, public_key: ec.EllipticCurvePublicKey, issuer: x509.Name
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _alternative_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
