"""The test command installs every system tool a test asks for, each from the package that
really carries it (a tool missing from the list passed on a developer's machine that had it and
failed on a fresh one: etcdctl, which Debian ships in etcd-client, not etcd-server)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support.helpers import ROOT, require_tool

TEST_SH = ROOT / "scripts" / "test.sh"


def listed_packages() -> dict[str, str]:
    block = re.search(r"declare -A PACKAGES=\((.*?)\n\)", TEST_SH.read_text(), re.S)
    assert block is not None, "scripts/test.sh has no PACKAGES table"
    return dict(re.findall(r"\[([\w.-]+)\]=([\w.+-]+)", block.group(1)))


def required_tools() -> set[str]:
    used: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        used |= set(re.findall(r'require_tool\("([\w.-]+)"\)', path.read_text()))
    return used


def test_every_required_tool_is_in_the_install_list() -> None:
    tools = required_tools()
    assert {"dig", "etcd", "etcdctl"} <= tools  # the scan finds what the suite uses
    missing = tools - listed_packages().keys()
    assert not missing, f"add these to PACKAGES in scripts/test.sh: {sorted(missing)}"


def test_each_installed_tool_comes_from_the_listed_package() -> None:
    dpkg = require_tool("dpkg")  # the install list is of Debian packages
    for tool, package in listed_packages().items():
        path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        if path is None:
            continue  # not installed here; the test that needs it fails or skips on its own
        real = str(Path(path).resolve())
        owners = set()
        for candidate in {path, real, real.replace("/usr/", "/", 1)}:
            out = subprocess.run([dpkg, "-S", candidate], capture_output=True, text=True)
            if out.returncode == 0:
                owners |= {o.strip().split(":")[0] for o in out.stdout.split(":", 1)[0].split(",")}
        if owners:
            assert package in owners, f"{tool} comes from {sorted(owners)}, listed as {package}"
