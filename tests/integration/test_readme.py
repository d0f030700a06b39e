"""The README's worked example, run as written against a fresh server (only the ports differ)."""

from __future__ import annotations

import json
import re
import subprocess

from helpers import ROOT, DnsdiscProcess, require_tool


def worked_example() -> list[tuple[str, list[str]]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Worked example", 1)[1]
    block = re.search(r"```console\n(.*?)```", section, re.S)
    assert block, "README has a console block under 'Worked example'"
    steps: list[tuple[str, list[str]]] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def test_readme_worked_example(server: DnsdiscProcess) -> None:
    require_tool("dig")
    require_tool("curl")
    steps = worked_example()
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
