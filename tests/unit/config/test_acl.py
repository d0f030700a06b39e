"""The acl section: tokens and rules read from the file, every error naming its entry, rules
deciding by first match, and the rules of a config without acl."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dnsdisc.api.acl import EVERYTHING, READ_ALL
from dnsdisc.config.load import Config, from_mapping
from dnsdisc.errors import ConfigError

HEX = hashlib.sha256(b"s3cret").hexdigest()


def _acl(tokens: object = None, anonymous: object = None, base: Path | None = None) -> Config:
    acl: dict[str, object] = {}
    if tokens is not None:
        acl["tokens"] = tokens
    if anonymous is not None:
        acl["anonymous"] = anonymous
    return from_mapping({"acl": acl}, "c.yaml", base)


def test_rules_decide_by_first_match() -> None:
    cfg = _acl(
        [
            {
                "name": "web-team",
                "secret_sha256": HEX,
                "rules": [
                    {"services": "web-secret", "access": "deny"},
                    {"services": "web*", "access": "write"},
                    {"services": "*", "access": "read"},
                ],
            },
            {"name": "ops", "rules": [{"services": "*", "access": "write"}, {"operator": True}]},
        ],
        [{"metrics": True}],
    )
    acl = cfg.acl()
    team = acl.by_secret("s3cret")
    assert team is not None and team.name == "web-team"
    rights = team.rights
    assert rights.can_write("web") and rights.can_write("web-api")
    assert not rights.can_read("web-secret")
    assert rights.can_read("db") and not rights.can_write("db")
    assert not rights.operator and not rights.metrics
    assert acl.by_secret("S3cret") is None and acl.by_secret("") is None
    ops = acl.by_name(("ops",))
    assert ops is not None and ops.rights.operator  # a certificate-only token
    assert acl.by_secret("anything") is None  # ops has no secret to match
    assert acl.anonymous.metrics and not acl.anonymous.can_read("web")
    assert "s3cret" not in repr(cfg) and HEX not in repr(acl)


def test_without_acl_the_rules_of_before_hold() -> None:
    assert Config().acl().anonymous == EVERYTHING  # no token: the API is open (on loopback)
    legacy = Config(token="t").acl()
    assert legacy.anonymous == READ_ALL
    token = legacy.by_secret("t")
    assert token is not None and token.rights == EVERYTHING
    # With an acl section http.token is one more token, and anonymous defaults to nothing.
    both = from_mapping({"http": {"token": "t"}, "acl": {"tokens": []}}, "c.yaml").acl()
    assert both.by_secret("t") is not None and not both.anonymous.can_read("web")
    assert not both.anonymous.metrics


@pytest.mark.parametrize(
    ("tokens", "anonymous", "key"),
    [
        ([{"name": "a b", "secret_sha256": HEX}], None, "acl.tokens[0].name"),
        ([{"name": "a", "secret_sha256": "xyz"}], None, "acl.tokens[0].secret_sha256"),
        ([{"name": "a", "secret": "x"}], None, "acl.tokens[0].secret"),
        ([{"name": "a"}, {"name": "a"}], None, "acl.tokens[1].name"),
        ([{"name": "a", "rules": [{"services": "*", "access": "all"}]}], None,
         "acl.tokens[0].rules[0].access"),
        ([{"name": "a", "rules": [{"access": "write"}]}], None, "acl.tokens[0].rules[0].services"),
        ([{"name": "a", "rules": [{}]}], None, "acl.tokens[0].rules[0]"),
        (None, [{"services": 5}], "acl.anonymous[0].services"),
        (None, [{"metrics": "yes"}], "acl.anonymous[0].metrics"),
        ("all", None, "acl.tokens"),
    ],
)  # fmt: skip
def test_each_bad_entry_is_named(tokens: object, anonymous: object, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _acl(tokens, anonymous)
    assert (err.value.source, err.value.key) == ("c.yaml", key), str(err.value)


def test_a_secret_file_is_private_and_one_line(tmp_path: Path) -> None:
    secret = tmp_path / "web.secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    cfg = _acl([{"name": "web", "secret_file": "web.secret"}], base=tmp_path)
    assert cfg.acl().by_secret("s3cret") is not None
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"acl.tokens\[0\].secret_file: .*chmod 600"):
        _acl([{"name": "web", "secret_file": "web.secret"}], base=tmp_path)
    secret.write_text("s3cret\nmore\n")
    secret.chmod(0o600)
    with pytest.raises(ConfigError, match=r"one line"):
        _acl([{"name": "web", "secret_file": "web.secret"}], base=tmp_path)
    with pytest.raises(ConfigError, match=r"not both"):
        _acl([{"name": "web", "secret_file": "web.secret", "secret_sha256": HEX}], base=tmp_path)
