"""The README's "## Layout" section and the tree agree: it names every package of dnsdisc (every
directory with an ``__init__.py``, as `dnsdisc/<path>/`) and every top-level module
(`dnsdisc/<name>.py`; ``__init__`` and ``__main__`` aside), and every path it names exists.

Paths are the section's backticked words that contain a ``/`` or end in ``.py``, relative to the
repository root; a bare `name.py` or `name/` may also be any module or directory under dnsdisc/
(a module named in its package's sentence). Patterns (`<name>`, `*`), URLs and HTTP paths
(`/v1/...`) are not paths. Packages and modules come from the file tree, never from a list."""

from __future__ import annotations

import re

from tests.support.helpers import ROOT

PACKAGE = ROOT / "dnsdisc"
README = ROOT / "README.md"


def layout_section() -> str:
    text = README.read_text()
    match = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "README.md has no '## Layout' section"
    return match.group(1)


def named_paths() -> set[str]:
    """The backticked paths of the Layout section, as written."""
    words = re.findall(r"`([^`\n]+)`", layout_section())
    return {
        word
        for word in words
        if ("/" in word or word.endswith(".py"))
        and not re.search(r"[\s<>*{}]|://", word)
        and not word.startswith("/")
    }


def required_paths() -> set[str]:
    """What the section must name: `dnsdisc/<path>/` for every package below dnsdisc itself and
    `dnsdisc/<name>.py` for every top-level module."""
    packages = {
        f"{init.parent.relative_to(ROOT).as_posix()}/"
        for init in PACKAGE.rglob("__init__.py")
        if init.parent != PACKAGE and "__pycache__" not in init.parts
    }
    modules = {
        f"dnsdisc/{path.name}" for path in PACKAGE.glob("*.py") if not path.stem.startswith("__")
    }
    return packages | modules


def exists(word: str) -> bool:
    relative = word.rstrip("/")
    want_dir = word.endswith("/")
    candidates = [ROOT / relative]
    if "/" not in relative:  # a bare name: at the root, or anywhere in the package
        candidates += [p for p in PACKAGE.rglob(relative) if "__pycache__" not in p.parts]
    return any(p.is_dir() if want_dir else p.exists() for p in candidates)


def test_the_tree_has_packages_and_modules_to_name() -> None:
    required = required_paths()
    assert {"dnsdisc/dnsserver/", "dnsdisc/errors.py"} <= required, sorted(required)


def test_the_layout_names_every_package_and_top_level_module() -> None:
    named = {word.rstrip("/") for word in named_paths()}
    missing = sorted(path for path in required_paths() if path.rstrip("/") not in named)
    assert not missing, (
        "README.md '## Layout' does not name these (a package as `dnsdisc/<path>/`, a top-level "
        "module as `dnsdisc/<name>.py`): " + ", ".join(f"`{path}`" for path in missing)
    )


def test_the_layout_names_nothing_that_does_not_exist() -> None:
    extra = sorted(word for word in named_paths() if not exists(word))
    assert not extra, "README.md '## Layout' names paths that do not exist: " + ", ".join(
        f"`{word}`" for word in extra
    )
