"""PTR names of registered addresses against a real dnsdisc: answered (with AA) for private,
shared and documentation addresses and inside ``reverse_zones``; a public address outside them
does not make the server answer for the address's reverse name."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.rcode
import dns.rdatatype
import dns.reversename

from tests.support.helpers import running

DOMAIN = "svc.internal"


def test_ptr_only_for_local_addresses_and_inside_reverse_zones(tmp_path: Path) -> None:
    conf = tmp_path / "dnsdisc.yaml"
    conf.write_text("reverse_zones: [1.1.1.in-addr.arpa]\n")
    with running(tmp_path, extra_args=["--config", str(conf), "--workers", "0"]) as server:
        addresses = {
            "pub": "8.8.8.8",  # public, outside reverse_zones
            "pub6": "2001:4860:4860::8888",
            "zoned": "1.1.1.1",  # public, inside reverse_zones
            "rfc1918": "10.0.0.1",
            "shared": "100.64.0.5",
            "doc": "192.0.2.7",
            "ula": "fd00::7",
            "doc6": "2001:db8::7",
        }
        for iid, address in addresses.items():
            server.register("web", iid, address=address, port=80)

        def ptr(address: str) -> dns.message.Message:
            return server.query(dns.reversename.from_address(address).to_text(), "PTR")

        for iid in ("zoned", "rfc1918", "shared", "doc", "ula", "doc6"):
            msg = ptr(addresses[iid])
            assert msg.rcode() == dns.rcode.NOERROR, (iid, msg.to_text())
            assert msg.flags & dns.flags.AA, iid
            targets = [rr.to_text() for rrset in msg.answer for rr in rrset]
            assert targets == [f"{iid}.web.{DOMAIN}."], (iid, targets)
        for iid in ("pub", "pub6"):
            msg = ptr(addresses[iid])
            assert msg.rcode() == dns.rcode.REFUSED, (iid, msg.to_text())
            assert not msg.answer and not msg.flags & dns.flags.AA, iid
        # The forward names of the public instances are still served.
        assert server.addresses(f"pub.web.{DOMAIN}") == ["8.8.8.8"]
