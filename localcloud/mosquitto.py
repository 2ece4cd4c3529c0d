"""A real Mosquitto broker with mutual TLS, for tests and for the local world's fleet.

* ``Pki`` makes a CA, a server certificate valid for ``localhost`` and ``127.0.0.1``,
  client certificates signed by that CA, and "rogue" material from a second CA that the
  broker does not trust (EC P-256 keys: fast to generate, accepted by OpenSSL and s2n).
* ``MosquittoBroker`` writes a mosquitto.conf (TLS listener on 127.0.0.1 and a free
  port, ``require_certificate``, the certificate CN as user name, no persistence, an
  optional ACL), runs ``mosquitto -c`` as a subprocess and waits until the port accepts.
  ``restart()`` comes back on the same port, for broker-outage tests.

Privileges: mosquitto started as root switches to the user named by ``user`` (default
``mosquitto``) before it reads the certificates, and pytest's temporary directories are
0700. The config therefore names the user that runs it (``user root`` under root),
so the broker never changes user and the private keys stay readable by their owner only.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"
#: Extra places to look for the binary: Debian installs it outside a normal user's PATH.
_FALLBACK_DIRS = ("/usr/sbin", "/usr/local/sbin")


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for directory in _FALLBACK_DIRS:
        candidate = Path(directory) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


# -- certificates --------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A certificate and its private key, as PEM files."""

    cert_path: Path
    key_path: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class _Authority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, common_name: str, directory: Path, stem: str) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / f"{stem}.crt"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, stem: str, *, server: bool) -> Credentials:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        credentials = Credentials(
            cert_path=self.directory / f"{stem}.crt", key_path=self.directory / f"{stem}.key"
        )
        credentials.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, credentials.key_path)
        return credentials


class Pki:
    """Test certificates: the broker's CA and a second CA nobody trusts."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._ca = _Authority("localcloud test CA", directory, "ca")
        self._rogue = _Authority("rogue test CA", directory, "rogue-ca")
        self.server = self._ca.issue("localhost", "server", server=True)
        self._clients: dict[str, Credentials] = {}
        self._lock = threading.Lock()

    @property
    def ca_path(self) -> Path:
        """The CA that signed the broker's and the clients' certificates."""
        return self._ca.cert_path

    @property
    def rogue_ca_path(self) -> Path:
        """A CA that signed neither the broker nor the good clients."""
        return self._rogue.cert_path

    def client(self, name: str) -> Credentials:
        """Client credentials with CN ``name`` (the broker's user name), made once."""
        with self._lock:
            if name not in self._clients:
                self._clients[name] = self._ca.issue(name, f"client-{name}", server=False)
            return self._clients[name]

    def rogue_client(self, name: str) -> Credentials:
        """Client credentials with CN ``name`` signed by the rogue CA (the broker rejects them)."""
        return self._rogue.issue(name, f"rogue-client-{name}", server=False)


# -- the broker ------------------------------------------------------------------------


class BrokerError(RuntimeError):
    """Mosquitto did not start or stop as asked."""


class MosquittoBroker:
    """One mosquitto process with a mutual-TLS listener on 127.0.0.1."""

    def __init__(
        self,
        binary: str,
        pki: Pki,
        directory: Path,
        *,
        acl: str | None = None,
        identity_as_username: bool = True,
        start_timeout: float = 10.0,
    ) -> None:
        self.binary = binary
        self.pki = pki
        self.directory = directory
        self.host = HOST
        self.port = free_port()
        self.start_timeout = start_timeout
        self.identity_as_username = identity_as_username
        directory.mkdir(parents=True, exist_ok=True)
        self.conf_path = directory / "mosquitto.conf"
        self.log_path = directory / "mosquitto.log"
        self.acl_path: Path | None = None
        if acl is not None:
            self.acl_path = directory / "acl"
            self.acl_path.write_text(acl)
        self._process: subprocess.Popen[bytes] | None = None
        self._write_conf()

    def _write_conf(self) -> None:
        lines = [
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "per_listener_settings false",
            "persistence false",
            # Without the certificate CN as user name, clients may send any (or no) name.
            f"allow_anonymous {'false' if self.identity_as_username else 'true'}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"listener {self.port} {self.host}",
            f"cafile {self.pki.ca_path}",
            f"certfile {self.pki.server.cert_path}",
            f"keyfile {self.pki.server.key_path}",
            "require_certificate true",
            f"use_identity_as_username {'true' if self.identity_as_username else 'false'}",
        ]
        if self.acl_path is not None:
            lines.append(f"acl_file {self.acl_path}")
        self.conf_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        """What mosquitto printed so far (all runs)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """Start mosquitto and return once its port accepts connections."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with {self._process.returncode}:\n{self.log()[-2000:]}"
                )
            if _accepts(self.host, self.port, timeout=0.2):
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise BrokerError(
                    f"mosquitto did not listen on {self.host}:{self.port} within "
                    f"{self.start_timeout:g} s:\n{self.log()[-2000:]}"
                )
            # Wait on the process rather than sleeping: returns early if it dies.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate mosquitto (SIGTERM, then SIGKILL) and wait for it. Idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _accepts(host: str, port: int, *, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
