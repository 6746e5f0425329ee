"""Development certificates: a CA, a serving certificate and client certificates.

What the book made with cfssl, made with `cryptography` so `proglog certs` needs
no extra tool. Keys are ECDSA P-256: small, and fast to make and to handshake
with. The client's identity (the ACL subject) is its certificate's common name.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyproglog.auth.acl import EXAMPLE_MODEL, EXAMPLE_POLICY
from pyproglog.auth.errors import SecurityError

DEFAULT_DAYS = 365
CA_COMMON_NAME = "proglog CA"
SERVER_COMMON_NAME = "proglog server"
# The subjects of the example policy: root may do everything, nobody nothing.
EXAMPLE_CLIENTS = ("root", "nobody")
# The served names every development certificate carries.
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


class CertError(SecurityError):
    pass


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def common_name(self) -> str:
        return _common_name(self.cert)

    def write(self, cert_path: Path, key_path: Path) -> None:
        _write(cert_path, self.cert_pem, 0o644)
        _write(key_path, self.key_pem, 0o600)


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode: a private key is never readable by others,
    # not even between creation and a chmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # O_CREAT's mode does not apply to an existing file


def _validity(days: int, start: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    if days <= 0:
        raise CertError(f"validity must be at least one day, got {days}")
    # Backdated a little so a client whose clock is slightly behind accepts it.
    begin = start or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return begin, begin + dt.timedelta(days=days)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signing only; a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    common_name: str = CA_COMMON_NAME, *, days: int = DEFAULT_DAYS, start: dt.datetime | None = None
) -> Issued:
    """A self-signed CA that signs only leaf certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    begin, end = _validity(days, start)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def _leaf(
    ca: Issued,
    common_name: str,
    usages: Sequence[x509.ObjectIdentifier],
    sans: Sequence[x509.GeneralName],
    days: int,
    start: dt.datetime | None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    begin, end = _validity(days, start)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


# One or more dot-separated labels, optionally a leading wildcard label.
_DNS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?")


def check_host(host: str) -> None:
    """Refuse what is neither an IP address nor a DNS name (a path, spaces, NUL).

    Such a name would only give a server certificate no client can verify.
    """
    try:
        ipaddress.ip_address(host.strip("[]"))
        return
    except ValueError:
        pass
    if not _DNS_NAME.fullmatch(host):
        raise CertError(f"invalid host {host!r}: expected a DNS name or an IP address")


def make_server_cert(
    ca: Issued,
    hosts: Sequence[str] = (),
    *,
    common_name: str = SERVER_COMMON_NAME,
    days: int = DEFAULT_DAYS,
    start: dt.datetime | None = None,
) -> Issued:
    """A serving certificate for localhost, 127.0.0.1 and `hosts` (names or IPs).

    It may also authenticate as a client, so a node can present it to its peers.
    """
    names = list(dict.fromkeys([*DEFAULT_HOSTS, *hosts]))
    for host in names:
        check_host(host)
    return _leaf(
        ca,
        common_name,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        [_san(h) for h in names],
        days,
        start,
    )


def make_client_cert(
    ca: Issued, subject: str, *, days: int = DEFAULT_DAYS, start: dt.datetime | None = None
) -> Issued:
    """A client certificate whose common name is the ACL subject `subject`."""
    if not subject or "," in subject or subject.strip() != subject:
        # A comma or padding could not be written in a casbin policy line.
        raise CertError(f"invalid client name {subject!r}")
    if subject in (".", "..") or any(c in subject for c in "/\\\0"):
        # The name becomes a file name (NAME-client.pem): it must not lead out of --out.
        raise CertError(
            f"invalid client name {subject!r}: it must be a plain file name "
            "(no '/', '\\', NUL, '.' or '..')"
        )
    return _leaf(ca, subject, [ExtendedKeyUsageOID.CLIENT_AUTH], [], days, start)


# -- the `proglog certs` files ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertPaths:
    """The file names of the book's cfssl set-up, in one directory."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca-key.pem"

    @property
    def server(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server-key.pem"

    def client(self, subject: str) -> Path:
        return self.dir / f"{subject}-client.pem"

    def client_key(self, subject: str) -> Path:
        return self.dir / f"{subject}-client-key.pem"

    @property
    def model(self) -> Path:
        return self.dir / "model.conf"

    @property
    def policy(self) -> Path:
        return self.dir / "policy.csv"


def load_ca(paths: CertPaths) -> Issued:
    try:
        cert = x509.load_pem_x509_certificate(paths.ca.read_bytes())
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    except OSError as exc:
        raise CertError(f"cannot read the CA: {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise CertError(f"invalid CA in {paths.dir}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertError(f"{paths.ca_key} is not the key of {paths.ca}")
    return Issued(cert, key)


def init_dir(
    out: Path, hosts: Sequence[str] = (), *, days: int = DEFAULT_DAYS, force: bool = False
) -> list[Path]:
    """Make a CA, server.pem and the root/nobody client certificates in `out`.

    Also writes the example ACL (model.conf, policy.csv) unless present. Refuses
    to replace an existing CA unless `force`: every certificate it signed would
    stop being trusted. Returns the files written.
    """
    paths = CertPaths(out)
    for host in hosts:  # before anything is written
        check_host(host)
    if paths.ca.exists() and not force:
        raise CertError(f"{paths.ca} exists; use --force to replace the CA")
    try:
        out.mkdir(parents=True, exist_ok=True)
        ca = make_ca(days=days)
        ca.write(paths.ca, paths.ca_key)
        written = [paths.ca, paths.ca_key]
        make_server_cert(ca, hosts, days=days).write(paths.server, paths.server_key)
        written += [paths.server, paths.server_key]
        for subject in EXAMPLE_CLIENTS:
            make_client_cert(ca, subject, days=days).write(
                paths.client(subject), paths.client_key(subject)
            )
            written += [paths.client(subject), paths.client_key(subject)]
        for path, text in ((paths.model, EXAMPLE_MODEL), (paths.policy, EXAMPLE_POLICY)):
            if not path.exists():
                _write(path, text.encode(), 0o644)
                written.append(path)
    except OSError as exc:
        raise CertError(f"cannot write {exc.filename or out}: {exc.strerror}") from None
    return written


def add_client(out: Path, subject: str, *, days: int = DEFAULT_DAYS) -> list[Path]:
    """A client certificate for `subject`, signed by the CA in `out`."""
    paths = CertPaths(out)
    issued = make_client_cert(load_ca(paths), subject, days=days)
    try:
        issued.write(paths.client(subject), paths.client_key(subject))
    except OSError as exc:
        raise CertError(f"cannot write {exc.filename or out}: {exc.strerror}") from None
    return [paths.client(subject), paths.client_key(subject)]
