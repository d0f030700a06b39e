"""The HTTP API over TLS (#17): real certificates made by openssl, real clients (curl, openssl
s_client, the Python client and the CLI), TLS 1.2+ only, mutual TLS, and certificate rotation
by reload while clients keep connecting."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dnsdisc.client import Client, ClientError, Unreachable
from tests.support.certs import Ca, Pair
from tests.support.helpers import (
    ROOT,
    DnsdiscProcess,
    free_port,
    require_tool,
    running,
    wait_until,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair | Ca]:
    d = tmp_path_factory.mktemp("pki")
    ca, other = Ca.make(d, "ca"), Ca.make(d, "other")
    return {
        "ca": ca,
        "other": other,
        "server": ca.issue(d, "server", "dnsdisc-a"),
        "rotated": ca.issue(d, "rotated", "dnsdisc-b"),
        "expired": ca.issue(d, "expired", "dnsdisc-old", days=-1),
        "client": ca.issue(d, "client", "web-team", server=False),
        "stranger": other.issue(d, "stranger", "web-team", server=False),
    }


def _pair(pki: dict[str, Pair | Ca], name: str) -> Pair:
    pair = pki[name]
    assert isinstance(pair, Pair)
    return pair


def _ca(pki: dict[str, Pair | Ca]) -> Path:
    return pki["ca"].cert


def _context(pki: dict[str, Pair | Ca], client: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(_ca(pki)))
    if client is not None:
        pair = _pair(pki, client)
        ctx.load_cert_chain(str(pair.cert), str(pair.key))
    return ctx


def _curl(server: DnsdiscProcess, *args: str, path: str = "/v1/services") -> tuple[int, str]:
    require_tool("curl")
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", *args,
         f"https://127.0.0.1:{server.http_port}{path}"],
        capture_output=True, text=True, timeout=15, check=False,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def _s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    require_tool("openssl")
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input="", capture_output=True, text=True, timeout=15, check=False,
    )  # fmt: skip


def _peer_cn(port: int, ctx: ssl.SSLContext) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    return dict(x[0] for x in cert["subject"])["commonName"]


def test_tls_only_from_1_2_and_plain_http_and_garbage_get_nothing(
    tmp_path: Path, pki: dict[str, Pair | Ca]
) -> None:
    server_pair = _pair(pki, "server")
    args = ["--http-tls-cert", str(server_pair.cert), "--http-tls-key", str(server_pair.key)]
    with running(
        tmp_path, extra_args=args, ssl_context=_context(pki), loopback_checks=False
    ) as server:
        port = server.http_port
        assert f"HTTP 127.0.0.1:{port} (TLS)" in server.log()
        code, out = _curl(server, "--cacert", str(_ca(pki)))
        assert (code, out) == (0, "200"), out
        # Without the CA the certificate is not trusted; with it, the name must match.
        code, out = _curl(server)
        assert code == 60, out
        # TLS 1.1 is refused by the server (the client is let offer it: SECLEVEL=0).
        old = _s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        assert old.returncode != 0 and "Cipher is (NONE)" in old.stdout, old.stdout
        assert "no peer certificate available" in old.stdout, old.stdout
        good = _s_client(port, "-tls1_2", "-CAfile", str(_ca(pki)))
        assert good.returncode == 0 and "Verify return code: 0 (ok)" in good.stdout
        # Plain HTTP to the TLS port, and a garbage ClientHello: closed, and the server serves.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /v1/services HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not s.recv(4096).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01" + os.urandom(600))
            s.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(4096)[:1] in (b"", b"\x15")  # closed, or an alert
        assert server.http("GET", "/v1/services").status == 200
        # The Python client and the CLI over https.
        client = Client(f"127.0.0.1:{port}", cacert=str(_ca(pki)))
        assert client.url == f"https://127.0.0.1:{port}"
        client.register("web", "w1", "10.0.0.1", 80)
        assert [s["name"] for s in client.services()] == ["web"]
        with pytest.raises(Unreachable, match="certificate verify failed"):
            Client(f"https://127.0.0.1:{port}").services()
        cli = subprocess.run(
            [sys.executable, "-m", "dnsdisc", "services", "--http", f"127.0.0.1:{port}",
             "--cacert", str(_ca(pki))],
            capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
        )  # fmt: skip
        assert cli.returncode == 0 and "web" in cli.stdout, cli.stderr
        bad = subprocess.run(
            [sys.executable, "-m", "dnsdisc", "services", "--http", f"127.0.0.1:{port}",
             "--cacert", str(tmp_path / "missing.pem")],
            capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
        )  # fmt: skip
        assert bad.returncode == 2 and "cannot load the CA file" in bad.stderr, bad.stderr


def test_mutual_tls_wants_a_certificate_the_ca_signed(
    tmp_path: Path, pki: dict[str, Pair | Ca]
) -> None:
    server_pair, client_pair = _pair(pki, "server"), _pair(pki, "client")
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(
        "http:\n  tls:\n"
        f"    cert_file: {server_pair.cert}\n    key_file: {server_pair.key}\n"
        f"    client_ca_file: {_ca(pki)}\n"
    )
    with running(
        tmp_path,
        extra_args=["--config", str(config)],
        ssl_context=_context(pki, "client"),
        loopback_checks=False,
    ) as server:
        assert "(TLS, client certificates required)" in server.log()
        ca = str(_ca(pki))
        code, out = _curl(server, "--cacert", ca)
        assert code != 0 and "200" not in out, out
        stranger = _pair(pki, "stranger")
        code, out = _curl(server, "--cacert", ca, "--cert", str(stranger.cert), "--key",
                          str(stranger.key))  # fmt: skip
        assert code != 0 and "200" not in out, out
        code, out = _curl(server, "--cacert", ca, "--cert", str(client_pair.cert), "--key",
                          str(client_pair.key))  # fmt: skip
        assert (code, out) == (0, "200"), out
        with pytest.raises((Unreachable, ClientError)):
            Client(f"127.0.0.1:{server.http_port}", cacert=ca).services()
        client = Client(
            f"127.0.0.1:{server.http_port}",
            cacert=ca,
            cert=str(client_pair.cert),
            key=str(client_pair.key),
        )
        assert client.register("web", "w1", "10.0.0.1", 80)["id"] == "w1"
        env = {**os.environ, "DNSDISC_CACERT": ca, "DNSDISC_CERT": str(client_pair.cert),
               "DNSDISC_KEY": str(client_pair.key)}  # fmt: skip
        cli = subprocess.run(
            [sys.executable, "-m", "dnsdisc", "instances", "web", "--http",
             f"127.0.0.1:{server.http_port}"],
            capture_output=True, text=True, timeout=30, check=False, cwd=ROOT, env=env,
        )  # fmt: skip
        assert cli.returncode == 0 and "w1" in cli.stdout, cli.stderr


def test_bad_certificates_stop_the_start_with_exit_2(
    tmp_path: Path, pki: dict[str, Pair | Ca]
) -> None:
    server_pair, rotated = _pair(pki, "server"), _pair(pki, "rotated")
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(  # a certificate with another one's key
        f"http:\n  tls:\n    cert_file: {server_pair.cert}\n    key_file: {rotated.key}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "dnsdisc", "serve", "--config", str(config), "--http",
         f"127.0.0.1:{free_port()}", "--dns", f"127.0.0.1:{free_port()}", "--storage", "memory"],
        capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"{config}: http.tls.cert_file:" in result.stderr, result.stderr


def test_certificates_rotate_on_reload_while_clients_connect(
    tmp_path: Path, pki: dict[str, Pair | Ca]
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "server.crt", live / "server.key"

    def install(name: str, key_of: str | None = None) -> None:
        pair, keyed = _pair(pki, name), _pair(pki, key_of or name)
        shutil.copy(pair.cert, cert)
        shutil.copy(keyed.key, key)

    install("server")
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(f"http:\n  tls:\n    cert_file: {cert}\n    key_file: {key}\n")
    ctx = _context(pki)
    with running(
        tmp_path, extra_args=["--config", str(config)], ssl_context=ctx, loopback_checks=False
    ) as server:
        port = server.http_port
        assert _peer_cn(port, ctx) == "dnsdisc-a"
        # A connection kept open across the rotation keeps working.
        kept = Client(f"https://127.0.0.1:{port}", cacert=str(_ca(pki)))
        kept.services()
        seen: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def connect() -> None:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    seen.append(_peer_cn(port, ctx))
                except (OSError, ssl.SSLError) as exc:
                    failures.append(repr(exc))
                time.sleep(0.01)

        worker = threading.Thread(target=connect)
        worker.start()
        try:
            wait_until(lambda: len(seen) >= 5, 10)
            install("rotated")
            assert server.http("POST", "/v1/reload").status == 200
            wait_until(lambda: seen[-1:] == ["dnsdisc-b"], 10)
            # A mismatched pair: the reload is refused and the rotated certificate serves on.
            install("server", key_of="rotated")
            refused = server.http("POST", "/v1/reload")
            assert refused.status == 400 and refused.body["field"] == "http.tls.cert_file"
            # An expired certificate loads (the key matches), but clients refuse it: that is
            # theirs to judge, as with any server. Back to a good one by SIGHUP.
            install("expired")
            assert server.proc is not None
            server.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "read again" in server.log().split("reload rejected")[-1], 10)
            with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
                _peer_cn(port, ctx)
            install("rotated")
            server.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: server.log().count("read again") >= 3, 10)
            count = len(seen)
            wait_until(lambda: len(seen) >= count + 5, 10)
        finally:
            stop.set()
            worker.join(10)
        assert _peer_cn(port, ctx) == "dnsdisc-b"
        assert "reload rejected" in server.log()
        assert kept.services() == []
        # Only the seconds with the expired certificate failed; never a refused connection.
        assert all("expired" in f for f in failures), failures[:3]
        assert seen.count("dnsdisc-a") >= 5 and seen.count("dnsdisc-b") >= 5
