"""The README's worked example, run as written against a fresh server (only the ports differ)."""

from __future__ import annotations

import json
import subprocess

from tests.support.helpers import DnsdiscProcess, console_steps, readme_block, require_tool


def test_readme_worked_example(server: DnsdiscProcess) -> None:
    require_tool("dig")
    require_tool("curl")
    steps = console_steps(readme_block("Worked example"))
    assert len(steps) >= 8
    for command, expected in steps:
        cmd = command.replace("localhost:8054", f"127.0.0.1:{server.http_port}").replace(
            "-p 8053", f"-p {server.dns_port}"
        )
        result = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, (command, result.stderr)
        got = result.stdout.splitlines()
        if command.startswith("curl") and expected and expected[0].startswith("{"):
            # The README shows the stable fields; every one of them must be as shown.
            shown = json.loads("\n".join(expected))
            reply = json.loads(result.stdout)
            assert {k: reply.get(k) for k in shown} == shown, command
        else:
            # Record order rotates per query; the set of lines is what the README promises.
            assert sorted(got) == sorted(expected), command
