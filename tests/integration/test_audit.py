"""The audit trail (#17): a JSON line per write attempt, allowed or denied, with who, what and the
instance before and after; in the file before the 2xx (a kill -9 right after loses nothing);
mode 0600; reopened on SIGHUP for rotation. And the data directory and database are private."""

from __future__ import annotations

import hashlib
import json
import signal
import stat
from pathlib import Path

from tests.support.helpers import running, wait_until

SECRET = "w3b-secret"
ACL = f"""
acl:
  tokens:
    - name: web-team
      secret_sha256: "{hashlib.sha256(SECRET.encode()).hexdigest()}"
      rules: [{{services: "web*", access: write}}, {{operator: true}}]
"""


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_write_attempt_is_audited_before_its_reply(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "dnsdisc.yaml"
    config.write_text(ACL + f"audit_log: {audit}\n")
    args = ["--config", str(config), "--workers", "1"]  # the SQLite store
    with running(tmp_path, extra_args=args, loopback_checks=False, token=SECRET) as server:
        assert stat.S_IMODE(audit.stat().st_mode) == 0o600
        data = server.data_dir
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "registry.sqlite3").stat().st_mode) == 0o600
        assert server.register("web", "w1", address="10.0.0.1", port=80).status == 201
        assert server.register("web", "w1", address="10.0.0.1", port=81).status == 200
        assert server.http("PUT", "/v1/services/db/instances/d1",
                           {"address": "10.0.0.2", "port": 80}).status == 403  # fmt: skip
        server.token = None
        assert server.http("DELETE", "/v1/services/web/instances/w1").status == 401
        server.token = SECRET
        assert server.http("GET", "/v1/services/web").status == 200  # reads are not audited
        put, change, denied, anonymous = _lines(audit)
        assert put["principal"] == "web-team" and put["via"] == "token"
        assert (put["method"], put["service"], put["instance"], put["status"]) == (
            "PUT", "web", "w1", 201,
        )  # fmt: skip
        assert put["before"] is None and put["after"]["port"] == 80  # type: ignore[index]
        assert change["before"]["port"] == 80 and change["after"]["port"] == 81  # type: ignore[index]
        assert (denied["status"], denied["service"]) == (403, "db") and "after" not in denied
        assert (anonymous["principal"], anonymous["status"]) == ("anonymous", 401)
        assert all(line["client"] == "127.0.0.1" and "time" in line for line in _lines(audit))
        assert SECRET not in audit.read_text()
        # Rotation: the file is moved away, SIGHUP, and the next line goes to a new file.
        audit.rename(tmp_path / "audit.jsonl.1")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        wait_until(audit.exists, 10)
        server.register("web", "w2", address="10.0.0.3", port=80)
        assert [line["instance"] for line in _lines(audit)] == ["w2"]
        assert len(_lines(tmp_path / "audit.jsonl.1")) == 4
        # kill -9 right after a 2xx: its line is there.
        assert server.http("DELETE", "/v1/services/web/instances/w2").status == 204
        server.kill()
        last = _lines(audit)[-1]
        assert (last["method"], last["instance"], last["status"]) == ("DELETE", "w2", 204)
        assert last["before"]["address"] == "10.0.0.3" and last["after"] is None  # type: ignore[index]
