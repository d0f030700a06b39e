"""tls.server_context: TLS 1.2+ only, client certificates when a CA is given, and a ConfigError
naming the key for files that cannot be loaded."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from dnsdisc.errors import ConfigError
from dnsdisc.tls import server_context
from tests.support.helpers import require_tool


def _pair(tmp_path: Path) -> tuple[str, str]:
    require_tool("openssl")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


def test_a_context_refuses_old_versions_and_asks_for_certificates_with_a_ca(
    tmp_path: Path,
) -> None:
    cert, key = _pair(tmp_path)
    plain = server_context(cert, key)
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2
    assert plain.verify_mode == ssl.CERT_NONE
    mutual = server_context(cert, key, cert)
    assert mutual.verify_mode == ssl.CERT_REQUIRED


def test_files_that_cannot_be_loaded_name_their_key(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path)
    with pytest.raises(ConfigError) as err:
        server_context(cert, cert, source="dnsdisc.yaml", key="http.tls")
    assert err.value.key == "http.tls.cert_file" and err.value.source == "dnsdisc.yaml"
    with pytest.raises(ConfigError) as err:
        server_context(cert, key, str(tmp_path / "missing.pem"), key="dns.tls")
    assert err.value.key == "dns.tls.client_ca_file"
