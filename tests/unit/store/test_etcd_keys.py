"""store.etcd.keys: the key schema under the prefix."""

from __future__ import annotations

from dnsdisc.store.etcd.keys import Keys, b64, delete_request, range_end, unb64


def test_the_etcd_key_schema_builds_and_parses_only_its_own_keys() -> None:
    keys = Keys("/dnsdisc/prod/")
    assert keys.prefix == "/dnsdisc/prod/"
    assert keys.parse(keys.service("web")) == ("services", "web", "")
    assert keys.parse(keys.instance("web", "a")) == ("instances", "web", "a")
    assert keys.parse(keys.status("web", "a")) == ("status", "web", "a")
    for other in (keys.leader, "/dnsdisc/prodx/services/web", "/dnsdisc/prod/services/Bad_Name"):
        assert keys.parse(other) is None
    # A prefix range covers the prefix's keys and nothing past them.
    assert (
        range_end("/a/b/") == "/a/b0" and unb64(keys.everything()["range_end"]) == "/dnsdisc/prod0"
    )
    deletion = delete_request(keys.instance("web"), prefix=True)["request_delete_range"]
    assert deletion == {
        "key": b64("/dnsdisc/prod/instances/web/"),
        "range_end": b64("/dnsdisc/prod/instances/web0"),
    }
