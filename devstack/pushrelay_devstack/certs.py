"""Certificates and keys for the devstack's kube-apiserver.

One CA signs the apiserver's serving certificate (127.0.0.1 / localhost, plus
the node's addresses and ``kubernetes.default.svc`` names with a node) and
every client certificate. The apiserver maps a client certificate's CN to the
user name and its O fields to groups, so ``O=system:masters`` is cluster-admin
and any other user starts with no permissions at all (RBAC is on).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client_cert(self, user: str) -> Path:
        return self.dir / f"user-{_safe(user)}.crt"

    def client_key(self, user: str) -> Path:
        return self.dir / f"user-{_safe(user)}.key"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(pki: Pki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _san_entries(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in ("localhost", "127.0.0.1", *names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _covers(cert_path: Path, names: Sequence[str]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = set(san)
    return all(entry in present for entry in _san_entries(names))


def ensure_pki(pki_dir: Path, extra_sans: Sequence[str] = ()) -> Pki:
    """Create the CA, serving cert and service-account keys once.

    The serving certificate names 127.0.0.1 and localhost plus ``extra_sans``
    (IP addresses or DNS names); one that lacks any of them is issued anew.
    """
    pki = Pki(pki_dir)
    pki_dir.mkdir(parents=True, exist_ok=True)
    if not (pki.ca_cert.exists() and pki.ca_key.exists()):
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pushrelay-devstack-ca")])
        cert = (
            _builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_key(pki.ca_key, key)
        _write_cert(pki.ca_cert, cert)
    if not (pki.serving_cert.exists() and pki.serving_key.exists()
            and _covers(pki.serving_cert, extra_sans)):
        _issue(
            pki, pki.serving_cert, pki.serving_key, "kube-apiserver", (),
            server=True, sans=extra_sans,
        )
    if not (pki.sa_key.exists() and pki.sa_pub.exists()):
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(pki.sa_key, sa)
        pki.sa_pub.write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return pki


def _issue(
    pki: Pki,
    cert_path: Path,
    key_path: Path,
    common_name: str,
    organizations: tuple[str, ...],
    *,
    server: bool = False,
    sans: Sequence[str] = (),
) -> None:
    ca_cert, ca_key = _load_ca(pki)
    key = _new_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = _builder(x509.Name(attrs), ca_cert.subject, key.public_key()).add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_san_entries(sans)),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def issue_client(pki: Pki, user: str, groups: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A client certificate for ``user`` in ``groups``; returns (cert, key)."""
    cert, key = pki.client_cert(user), pki.client_key(user)
    _issue(pki, cert, key, user, groups)
    return cert, key
