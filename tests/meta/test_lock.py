"""Supply chain: requirements.lock pins every runtime dependency (and what they pull in) with a
sha256 hash, the floors in pyproject.toml are at or past the versions that fixed the known
advisories, and the Dockerfile installs from the lock by hash on a base image pinned by digest."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.helpers import ROOT

# The version that fixed the latest advisory known for each (docs/security.md lists them).
FIXED = {
    "aiohttp": "3.14.3",  # CVE-2026-69244 (3.14.3), CVE-2026-69243 (3.14.2), ...
    "dnspython": "2.6.1",  # CVE-2023-29483
    "pyyaml": "5.4",  # CVE-2020-14343
}
# The Docker image's platform: the lock is for it.
ENV = {"sys_platform": "linux", "platform_python_implementation": "CPython", "extra": ""}


def runtime_requirements() -> list[Requirement]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return [r for r in map(Requirement, deps) if r.marker is None or r.marker.evaluate(ENV)]


def locked() -> dict[str, tuple[Version, list[str]]]:
    text = (ROOT / "requirements.lock").read_text()
    out = {}
    for name, version, hashes in re.findall(
        r"^([A-Za-z0-9_.-]+)==(\S+)((?:\s*\\\n\s+--hash=\S+)+)", text, re.M
    ):
        out[canonicalize_name(name)] = (Version(version), re.findall(r"--hash=(\S+)", hashes))
    return out


def test_every_locked_package_has_a_sha256_hash() -> None:
    lock = locked()
    pinned = re.findall(r"^[A-Za-z0-9_.-]+==", (ROOT / "requirements.lock").read_text(), re.M)
    assert len(pinned) == len(lock) > 0
    for name, (_, hashes) in lock.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


def test_the_lock_covers_every_runtime_dependency_and_what_it_pulls_in() -> None:
    lock = locked()
    todo = runtime_requirements()
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        assert name in lock, f"{name} is not in requirements.lock (run scripts/lock.sh)"
        assert req.specifier.contains(lock[name][0], prereleases=True), (name, str(req))
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: its own dependencies are checked by pip check
        todo += [
            r for r in map(Requirement, requires) if r.marker is None or r.marker.evaluate(ENV)
        ]
    assert {"aiohttp", "dnspython", "pyyaml", "prometheus-client", "uvloop"} <= seen


def test_floors_are_past_the_fixed_versions() -> None:
    floors = {}
    for req in runtime_requirements():
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        floors[canonicalize_name(req.name)] = max(lows) if lows else None
    for name, fixed in FIXED.items():
        assert floors[name] is not None and floors[name] >= Version(fixed), (name, floors[name])
        assert locked()[name][0] >= Version(fixed), name


def test_the_dockerfile_installs_from_the_lock_on_a_pinned_base() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(re.search(r"@sha256:[0-9a-f]{64}$", f) for f in froms), froms
    assert re.search(r"pip install [^\n]*--require-hashes[^\n]*-r requirements\.lock", text)
    # dnsdisc itself is installed without resolving anything from an index.
    assert re.search(r"pip install [^\n]*--no-deps[^\n]*--no-index[^\n]* \.", text)
