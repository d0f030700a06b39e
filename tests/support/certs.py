"""Certificates for TLS tests, made by the real ``openssl`` command: a CA, and leaf
certificates it signs for a server (names in subjectAltName) or a client (a CN)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.helpers import require_tool


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Ca:
    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path, name: str = "ca") -> Ca:
        require_tool("openssl")
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "2", "-subj", f"/CN=dnsdisc test {name}", "-keyout", str(key),
            "-out", str(cert), "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return cls(cert, key)

    def issue(
        self,
        directory: Path,
        name: str,
        cn: str,
        *,
        server: bool = True,
        sans: str = "IP:127.0.0.1,DNS:localhost",
        days: int = 2,
    ) -> Pair:
        """A leaf signed by this CA; ``days`` < 0 makes one that has already expired
        (OpenSSL 3.0 then sets notAfter before notBefore)."""
        cert, key, csr = (directory / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        ext = directory / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        ext.write_text(
            f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
            + (f"subjectAltName={sans}\n" if server else "")
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(cert), "-extfile", str(ext), "-days", str(days),
        )  # fmt: skip
        return Pair(cert, key)


def self_signed(directory: Path, name: str, sans: str = "IP:127.0.0.1,DNS:localhost") -> Pair:
    """A server certificate that signs itself (no CA): trusted by nobody unless told to."""
    require_tool("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
        "-addext", f"subjectAltName={sans}", "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature", "-addext", "extendedKeyUsage=serverAuth",
    )  # fmt: skip
    return Pair(cert, key)
