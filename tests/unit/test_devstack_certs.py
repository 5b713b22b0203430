"""Devstack PKI: CA, serving cert for loopback, client certs carrying user and groups."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pushrelay_devstack.certs import ensure_pki, issue_client


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    return cert.issuer == ca.subject


def test_serving_cert_covers_loopback_and_is_signed_by_ca(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    ca, serving = _cert(pki.ca_cert), _cert(pki.serving_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert _signed_by(serving, ca)
    assert stat.S_IMODE(pki.ca_key.stat().st_mode) == 0o600
    assert pki.sa_key.exists() and pki.sa_pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY")


def test_ensure_pki_is_idempotent(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path).ca_cert.read_bytes()
    assert ensure_pki(tmp_path).ca_cert.read_bytes() == first


def test_client_cert_maps_user_and_groups(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    cert_path, key_path = issue_client(pki, "alice", ("team-a", "team-b"))
    cert = _cert(cert_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["team-a", "team-b"]
    assert _signed_by(cert, _cert(pki.ca_cert))
    assert key_path.exists()


def test_odd_user_names_make_safe_file_names(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    cert_path, _ = issue_client(pki, "system:serviceaccount:ns/x")
    assert cert_path.parent == tmp_path
    assert "/" not in cert_path.name and ":" not in cert_path.name
