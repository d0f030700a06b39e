"""The README's worked example, run as written against a fresh server (only the ports differ)."""

from __future__ import annotations

import json

from tests.support.helpers import (
    DnsdiscProcess,
    console_steps,
    readme_block,
    require_tool,
    run_step,
)


def test_readme_worked_example(server: DnsdiscProcess) -> None:
    require_tool("dig")
    require_tool("curl")
    steps = console_steps(readme_block("Worked example"))
    assert len(steps) >= 8
    for command, expected in steps:
        got = run_step(server, command)
        if command.startswith("curl") and expected and expected[0].startswith("{"):
            # The README shows the stable fields; every one of them must be as shown.
            shown = json.loads("\n".join(expected))
            reply = json.loads("\n".join(got))
            assert {k: reply.get(k) for k in shown} == shown, command
        else:
            # Record order rotates per query; the set of lines is what the README promises.
            assert sorted(got) == sorted(expected), command
