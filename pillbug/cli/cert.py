"""pillbug cert: the CA, node and client certificates, with CockroachDB's file names and flags.

  create-ca      ca.crt in --certs-dir, its key at --ca-key
  create-node    node.crt / node.key for the given host names and addresses
  create-client  client.<user>.crt / client.<user>.key (the certificate's CN is the user)
  list           what --certs-dir holds
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


def _parse_lifetime(text: str) -> datetime.timedelta:
    text = text.strip()
    units = {"h": 1 / 24, "d": 1, "y": 365}
    if text and text[-1] in units:
        return datetime.timedelta(days=float(text[:-1]) * units[text[-1]])
    return datetime.timedelta(hours=float(text))


def _write_key(path: str, key: rsa.RSAPrivateKey, overwrite: bool) -> None:
    if os.path.exists(path) and not overwrite:
        raise SystemExit(f"ERROR: file {path} already exists (use --overwrite)")
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _write_cert(path: str, cert: x509.Certificate, overwrite: bool) -> None:
    if os.path.exists(path) and not overwrite:
        raise SystemExit(f"ERROR: file {path} already exists (use --overwrite)")
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _new_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _load_ca(certs_dir: str, ca_key_path: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    ca_path = os.path.join(certs_dir, "ca.crt")
    if not os.path.exists(ca_path):
        raise SystemExit(f"ERROR: no CA certificate at {ca_path} (run `pillbug cert create-ca` first)")
    if not os.path.exists(ca_key_path):
        raise SystemExit(f"ERROR: no CA key at {ca_key_path}")
    with open(ca_path, "rb") as f:
        ca_cert = x509.load_pem_x509_certificates(f.read())[0]
    with open(ca_key_path, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    return ca_cert, ca_key  # type: ignore[return-value]


def create_ca(args: argparse.Namespace) -> None:
    os.makedirs(args.certs_dir, exist_ok=True)
    ca_key_dir = os.path.dirname(os.path.abspath(args.ca_key))
    os.makedirs(ca_key_dir, exist_ok=True)
    if os.path.exists(args.ca_key) and args.allow_ca_key_reuse:
        with open(args.ca_key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    else:
        key = _new_key(args.key_size)
        _write_key(args.ca_key, key, args.overwrite)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cockroach"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Cockroach CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - DAY)
            .not_valid_after(now + _parse_lifetime(args.lifetime))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_cert(os.path.join(args.certs_dir, "ca.crt"), cert, args.overwrite)


def _signed(ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey, key: rsa.RSAPrivateKey, common_name: str,
            sans: list[x509.GeneralName], usages: list, lifetime: datetime.timedelta) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cockroach"),
                                        x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - DAY)
               .not_valid_after(min(now + lifetime, ca_cert.not_valid_after_utc))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def create_node(args: argparse.Namespace) -> None:
    if not args.hosts:
        raise SystemExit("ERROR: create-node requires at least one host name or address")
    ca_cert, ca_key = _load_ca(args.certs_dir, args.ca_key)
    key = _new_key(args.key_size)
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(args.hosts):  # each name once, in the order given
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = _signed(ca_cert, ca_key, key, "node", sans,
                   [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                   _parse_lifetime(args.lifetime))
    _write_cert(os.path.join(args.certs_dir, "node.crt"), cert, args.overwrite)
    _write_key(os.path.join(args.certs_dir, "node.key"), key, args.overwrite)


def create_client(args: argparse.Namespace) -> None:
    user = args.user
    ca_cert, ca_key = _load_ca(args.certs_dir, args.ca_key)
    key = _new_key(args.key_size)
    cert = _signed(ca_cert, ca_key, key, user, [x509.DNSName(user)] if user.isidentifier() else [],
                   [ExtendedKeyUsageOID.CLIENT_AUTH], _parse_lifetime(args.lifetime))
    _write_cert(os.path.join(args.certs_dir, f"client.{user}.crt"), cert, args.overwrite)
    _write_key(os.path.join(args.certs_dir, f"client.{user}.key"), key, args.overwrite)


def make_pki(certs_dir: str, ca_key: str, hosts: list[str], users: list[str]) -> None:
    """A CA, a node certificate for `hosts` and client certificates for `users`, with the same
    defaults as the CLI verbs (for `pillbug demo`)."""
    common = {"certs_dir": certs_dir, "ca_key": ca_key, "key_size": 2048, "overwrite": False}
    create_ca(argparse.Namespace(**common, lifetime="3660d", allow_ca_key_reuse=False))
    create_node(argparse.Namespace(**common, lifetime="1830d", hosts=hosts))
    for user in users:
        create_client(argparse.Namespace(**common, lifetime="1830d", user=user))


def list_certs(args: argparse.Namespace) -> None:
    rows = []
    if not os.path.isdir(args.certs_dir):
        raise SystemExit(f"ERROR: no such directory: {args.certs_dir}")
    for name in sorted(os.listdir(args.certs_dir)):
        if not name.endswith(".crt"):
            continue
        path = os.path.join(args.certs_dir, name)
        try:
            with open(path, "rb") as f:
                cert = x509.load_pem_x509_certificates(f.read())[0]
        except ValueError:
            continue
        usage = "CA" if name == "ca.crt" else ("Node" if name == "node.crt" else "Client")
        key_file = name[:-4] + ".key" if usage != "CA" else ""
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        notes = ""
        if usage == "Client" and cn:
            notes = f"user: {cn[0].value}"
        elif usage == "Node":
            try:
                names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                notes = "addresses: " + ",".join(str(n.value) for n in names)
            except x509.ExtensionNotFound:
                notes = ""
        elif usage == "CA":
            notes = "num certs: 1"
        rows.append((usage, name, key_file, cert.not_valid_after_utc.strftime("%Y/%m/%d"), notes))
    print(f"Certificate directory: {args.certs_dir}")
    header = ("Usage", "Certificate File", "Key File", "Expires", "Notes")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    print("  " + " | ".join(h.center(w) for h, w in zip(header, widths)))
    print("-" + "-+-".join("-" * (w + 1) for w in widths))
    for r in rows:
        print("  " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def add_parser(sub: argparse._SubParsersAction) -> None:
    cert = sub.add_parser("cert", help="create and list certificates")
    verbs = cert.add_subparsers(dest="cert_command", required=True)

    def common(p: argparse.ArgumentParser, ca_key_required: bool = True) -> None:
        p.add_argument("--certs-dir", default=os.environ.get("COCKROACH_CERTS_DIR", "certs"))
        p.add_argument("--ca-key", required=ca_key_required, default=os.environ.get("COCKROACH_CA_KEY"))
        p.add_argument("--key-size", type=int, default=2048)
        p.add_argument("--lifetime", default="1830d" if ca_key_required else "3660d")
        p.add_argument("--overwrite", action="store_true")

    p = verbs.add_parser("create-ca", help="create a CA certificate and key")
    common(p)
    p.set_defaults(lifetime="3660d")
    p.add_argument("--allow-ca-key-reuse", action="store_true")
    p.set_defaults(func=create_ca)
    p = verbs.add_parser("create-node", help="create a node certificate and key")
    common(p)
    p.add_argument("hosts", nargs="*")
    p.set_defaults(func=create_node)
    p = verbs.add_parser("create-client", help="create a client certificate and key")
    common(p)
    p.add_argument("user")
    p.set_defaults(func=create_client)
    p = verbs.add_parser("list", help="list certificates in --certs-dir")
    p.add_argument("--certs-dir", default=os.environ.get("COCKROACH_CERTS_DIR", "certs"))
    p.set_defaults(func=list_certs)


def run(args: argparse.Namespace) -> int:
    try:
        args.func(args)
    except OSError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0
