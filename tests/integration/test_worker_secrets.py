"""The DNS worker processes hold no API token (#17): not in their environment, which they
used to inherit, and not in what they are sent (tests/unit/workers/test_pool.py)."""

from __future__ import annotations

from pathlib import Path

from tests.support.helpers import running, wait_until


def test_workers_do_not_inherit_the_token_or_the_cookie_secret(tmp_path: Path) -> None:
    secret = "00112233445566778899aabbccddeeff"
    env = {"DNSDISC_TOKEN": "t0ken-in-env", "DNSDISC_COOKIE_SECRET": secret}
    args = ["--workers", "2", "--storage", "memory"]
    with running(tmp_path, extra_args=args, env=env, token="t0ken-in-env") as server:
        wait_until(lambda: len(server.children()) == 2, 10)
        assert server.proc is not None
        main = Path(f"/proc/{server.proc.pid}/environ").read_bytes()
        assert b"DNSDISC_TOKEN=t0ken-in-env" in main  # the test does pass it
        for pid in server.children():
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"t0ken-in-env" not in environ and secret.encode() not in environ
            assert b"PATH=" in environ  # the rest of the environment is kept
        server.register("web", "w1", address="10.0.0.1", port=80)
        assert server.addresses("web.svc.internal.") == ["10.0.0.1"]
