"""Parsers of the ``acl`` section: ``acl.tokens`` (each a name, a secret given by its SHA-256 or
by a file, and rules) and ``acl.anonymous`` (rules). Every error names the entry and its key
(``acl.tokens[1].rules[0].access``). A secret read from a file is hashed at once; only the
hash is kept."""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from pathlib import Path

from dnsdisc.api.acl import ACCESS, Rights, Rule, Token, digest
from dnsdisc.config.parsers import At, check_keys, file_path

_RULE_KEYS = ("services", "access", "operator", "metrics")
_TOKEN_KEYS = ("name", "secret_sha256", "secret_file", "rules")
# A token's name is shown in logs and errors and matched against certificate names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def anonymous(value: object, at: At) -> Rights:
    return Rights(_rules(value, at))


def _rules(value: object, at: At) -> tuple[Rule, ...]:
    if not isinstance(value, list):
        raise at.error("expected a list of rules, e.g. [{services: 'web*', access: write}]")
    return tuple(_rule(item, at.to(f"{at.key}[{n}]")) for n, item in enumerate(value))


def _rule(value: object, at: At) -> Rule:
    if not isinstance(value, Mapping):
        raise at.error("expected a rule: {services: GLOB, access: read|write|deny}, "
                       "{operator: true} or {metrics: true}")  # fmt: skip
    check_keys(value, _RULE_KEYS, at.source, f"{at.key}.")
    services = value.get("services")
    if services is not None and (not isinstance(services, str) or not services.strip()):
        raise at.to(f"{at.key}.services").error("expected a glob on service names, e.g. web*")
    access = value.get("access", "read")
    if access not in ACCESS:
        raise at.to(f"{at.key}.access").error("expected read, write or deny")
    flags = {}
    for key in ("operator", "metrics"):
        flag = value.get(key, False)
        if not isinstance(flag, bool):
            raise at.to(f"{at.key}.{key}").error("expected true or false")
        flags[key] = flag
    if services is None and "access" in value:
        raise at.to(f"{at.key}.services").error("access needs the services it applies to")
    if services is None and not any(flags.values()):
        raise at.error("a rule grants something: services with access, operator or metrics")
    return Rule(services, access, **flags)


def tokens(value: object, at: At) -> tuple[Token, ...]:
    if not isinstance(value, list):
        raise at.error("expected a list of tokens: [{name: ..., secret_sha256: ..., rules: ...}]")
    found: list[Token] = []
    for n, item in enumerate(value):
        token = _token(item, at.to(f"{at.key}[{n}]"))
        if any(t.name == token.name for t in found):
            raise at.to(f"{at.key}[{n}].name").error(f"{token.name!r} is named twice")
        found.append(token)
    return tuple(found)


def _token(value: object, at: At) -> Token:
    if not isinstance(value, Mapping):
        raise at.error("expected a token: {name: ..., secret_sha256: ..., rules: [...]}")
    check_keys(value, _TOKEN_KEYS, at.source, f"{at.key}.")
    name = value.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise at.to(f"{at.key}.name").error(
            "expected a name of letters, digits and . _ @ : - (up to 128)"
        )
    if "secret_sha256" in value and "secret_file" in value:
        raise at.to(f"{at.key}.secret_file").error("give secret_sha256 or secret_file, not both")
    secret = b""
    if "secret_sha256" in value:
        given = value["secret_sha256"]
        if not isinstance(given, str) or not _SHA256.fullmatch(given):
            raise at.to(f"{at.key}.secret_sha256").error(
                "expected 64 hex digits: sha256 of the secret (printf %s SECRET | sha256sum)"
            )
        secret = bytes.fromhex(given)
    elif "secret_file" in value:
        secret = _secret_file(value["secret_file"], at.to(f"{at.key}.secret_file"))
    rules = _rules(value.get("rules", []), at.to(f"{at.key}.rules"))
    return Token(name, secret, Rights(rules))


def _secret_file(value: object, at: At) -> bytes:
    path: Path = file_path(value, at)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise at.error(f"a readable file with the secret ({exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise at.error(f"{path} is readable by others: chmod 600 it")
    secret = text.removesuffix("\n")
    if not secret or not secret.isprintable() or secret != secret.strip():
        raise at.error(f"{path} must hold one line: the secret, printable, without spaces around")
    return digest(secret)
