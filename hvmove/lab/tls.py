"""A self-signed certificate for the lab's HTTPS listeners.

The certificate names ``IP:127.0.0.1`` and ``DNS:localhost`` so that a client can validate it for
real (``cert_validation=<cert path>``) instead of switching validation off: the lab then exercises
the same TLS code path as production HTTPS on port 5986.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_NAME = "lab-cert.pem"
KEY_NAME = "lab-key.pem"
VALIDITY = datetime.timedelta(days=730)
# Regenerate well before expiry so a lab started today still works for a long test session.
RENEW_BEFORE = datetime.timedelta(days=7)

_SAN_IPS = {ipaddress.IPv4Address("127.0.0.1")}
_SAN_DNS = {"localhost"}


def make_self_signed(
    directory: Path, *, dns_name: str | None = None, stem: str = "lab"
) -> tuple[Path, Path]:
    """Return ``(cert, key)`` PEM paths in `directory`, creating them unless usable ones exist.

    By default the lab certificate (IP:127.0.0.1, DNS:localhost). With ``dns_name``, one issued
    for that name only: a host serving it has "the wrong certificate name" for 127.0.0.1."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{stem}-cert.pem"
    key_path = directory / f"{stem}-key.pem"
    ips = set() if dns_name else _SAN_IPS
    dns = {dns_name} if dns_name else _SAN_DNS
    if _reusable(cert_path, key_path, ips, dns):
        return cert_path, key_path

    # P-256 rather than RSA: generation takes microseconds, which keeps per-test fixtures cheap.
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "hvmove lab"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hvmove lab (self-signed, tests only)"),
        ]
    )
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Backdated a little: a client whose clock is slightly behind must not see "not yet valid".
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(d) for d in sorted(dns)] + [x509.IPAddress(ip) for ip in sorted(ips)]
            ),
            critical=False,
        )
        # A leaf, not a CA: OpenSSL accepts a self-signed leaf as its own trust anchor, and strict
        # verifiers (Python 3.13's VERIFY_X509_STRICT) want the key identifiers present.
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
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )

    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key_path, key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _write_private(path: Path, data: bytes) -> None:
    # Create with 0600 from the start: a chmod after writing would leave a window where the key
    # is readable by others.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)  # the umask or an existing tmp file may have left other bits
    os.replace(tmp, path)


def _reusable(cert_path: Path, key_path: Path, ips: set, dns: set) -> bool:
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, OSError):
        return False

    now = datetime.datetime.now(datetime.UTC)
    if not (cert.not_valid_before_utc <= now and now + RENEW_BEFORE < cert.not_valid_after_utc):
        return False
    if not (
        set(san.get_values_for_type(x509.IPAddress)) == ips
        and set(san.get_values_for_type(x509.DNSName)) == dns
    ):
        return False
    # A key from a different run next to this certificate would make the TLS handshake fail
    # with an error that points nowhere near the cause.
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if cert.public_key().public_bytes(enc, spki) != key.public_key().public_bytes(enc, spki):
        return False
    if key_path.stat().st_mode & 0o077:
        os.chmod(key_path, 0o600)
    return True
