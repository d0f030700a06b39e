"""The import graph: the layer contracts in pyproject.toml hold (import-linter), every module of
dnsdisc imports alone in a fresh interpreter (no cycle hidden by the order a test suite happens to
import things in), and the client loads neither the server side nor its dependencies.

Modules are found from the file tree, so a module added anywhere under dnsdisc/ is checked
without a change here."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import ROOT

PACKAGE = ROOT / "dnsdisc"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def dnsdisc_modules(under: Path = PACKAGE) -> list[str]:
    """Every module and package under ``under``, from the file tree. ``__main__`` modules are
    left out: importing one runs the program."""
    return sorted(
        module_name(path)
        for path in under.rglob("*.py")
        if path.stem != "__main__" and "__pycache__" not in path.parts
    )


MODULES = dnsdisc_modules()


def subprocess_env() -> dict[str, str]:
    """The environment for a child interpreter that imports this checkout's dnsdisc."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), path]))}


def test_the_layer_contracts_hold() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    command = str(linter) if linter.exists() else shutil.which("lint-imports")
    assert command, "lint-imports is not installed (pip install -e '.[test]')"
    result = subprocess.run(
        [command, "--no-cache"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken\.", output), output


# One interpreter starts, imports nothing of dnsdisc, and forks a child per module (as many at a
# time as there are CPUs): each child starts from that clean state, imports one module and reports
# through a pipe. As strict as one interpreter per module, since nothing of dnsdisc is loaded
# before the fork, and several times faster.
IMPORT_EACH = """
import json, os, sys, importlib.util


def child(name, write_end):
    code, message = 0, ""
    try:
        __import__(name)
    except BaseException:
        import traceback
        code, message = 1, traceback.format_exc()
    data = message.encode()
    while data:
        data = data[os.write(write_end, data):]
    os._exit(code)


def collect(pid, read_end):
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return [os.waitstatus_to_exitcode(status), b"".join(chunks).decode()]


spec = importlib.util.find_spec("dnsdisc")
results = {"__origin__": spec.origin if spec else None}
pending = list(sys.argv[1:])
running = []
while pending or running:
    while pending and len(running) < (os.cpu_count() or 1):
        name = pending.pop(0)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            child(name, write_end)
        os.close(write_end)
        running.append((name, pid, read_end))
    name, pid, read_end = running.pop(0)
    results[name] = collect(pid, read_end)
sys.stdout.flush()
print("\\n" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def imported_alone() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", IMPORT_EACH, *MODULES],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    results: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    origin = results.pop("__origin__")
    assert origin == str(PACKAGE / "__init__.py"), f"the children import dnsdisc from {origin}"
    return results


def test_the_module_list_comes_from_the_tree() -> None:
    assert {"dnsdisc", "dnsdisc.errors", "dnsdisc.client", "dnsdisc.dnsserver.wire"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports_alone(imported_alone: dict[str, Any], module: str) -> None:
    code, error = imported_alone[module]
    assert code == 0, f"`import {module}` in a fresh interpreter failed:\n{error}"


# What a program that only talks to dnsdisc must not pay for (the contracts forbid importing
# these from dnsdisc.client; this checks what an import really loads, dnsdisc/__init__ included).
CLIENT_MUST_NOT_LOAD = ("yaml", "aiohttp", "dnsdisc.config", "dnsdisc.server")


@pytest.mark.parametrize("module", dnsdisc_modules(PACKAGE / "client"))
def test_the_client_loads_no_server_side(module: str) -> None:
    code = f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    unwanted = sorted(
        name
        for name in loaded
        for banned in CLIENT_MUST_NOT_LOAD
        if name == banned or name.startswith(banned + ".")
    )
    assert not unwanted, f"`import {module}` loads {unwanted}"


def test_tests_share_code_only_through_tests_support() -> None:
    """A test module imports no other test module, nor a conftest, nor a module found only
    because a directory of tests/ is on sys.path; shared code lives in tests.support."""
    tests = ROOT / "tests"
    # node_modules (tests/consul-js) holds npm packages, not test code.
    local_names = {p.stem for p in tests.rglob("*.py")} | {
        p.name for p in tests.rglob("*/") if "node_modules" not in p.parts
    }
    wrong = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "tests":
                    ok = parts[:2] == ["tests", "support"]
                else:
                    ok = parts[0] not in local_names
                if not ok:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
        if re.search(r"sys\.path\.(insert|append)", path.read_text()):
            wrong.append(f"{path.relative_to(ROOT)}: edits sys.path")
    assert not wrong, "import shared test code from tests.support:\n" + "\n".join(wrong)
