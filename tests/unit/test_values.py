"""values: the generic validators (DNS labels, IP addresses) at the edges."""

from __future__ import annotations

import ipaddress

import pytest

from dnsdisc.errors import ValidationError
from dnsdisc.values import endpoint_address, ip_address, label


@pytest.mark.parametrize("good", ["a", "web", "web-1", "0", "a" * 63, "WEB"])
def test_labels(good: str) -> None:
    assert label(good, "f") == good.lower()


@pytest.mark.parametrize("bad", ["", "-a", "a-", "a_b", "a.b", "a" * 64, "é", 5, None])
def test_bad_labels(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        label(bad, "f")
    assert info.value.field == "f"


# IPv4 takes a fast path (inet_pton); it must take and refuse exactly what ipaddress does.
@pytest.mark.parametrize(
    "text",
    ["1.2.3.4", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3.04", "00.0.0.0", "1.2.3",
     "1.2.3.4.5", "256.1.1.1", " 1.2.3.4", "1.2.3.4 ", "1.2.3.4\n", "1.2.3.4\x00", "0x1.2.3.4",
     "1..2.3", "1.2.3.", "+1.2.3.4", "1.2.3.-4", "\u0661.2.3.4", "::ffff:1.2.3.4", "2001:DB8::1"],
)  # fmt: skip
def test_address_check_agrees_with_ipaddress(text: str) -> None:
    try:
        expected: str | None = str(ipaddress.ip_address(text))
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValidationError):
            ip_address(text)
    else:
        assert ip_address(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.0.0.1", "10.0.0.1"), ("::ffff:10.0.0.1", "10.0.0.1"), ("169.254.1.1", "169.254.1.1"),
     ("2001:DB8::1", "2001:db8::1"), ("127.0.0.1", "127.0.0.1"), ("223.255.255.255", "223.255.255.255"),
     ("240.0.0.1", "240.0.0.1")],
)  # fmt: skip
def test_endpoint_addresses(text: str, expected: str) -> None:
    assert endpoint_address(text) == expected


@pytest.mark.parametrize(
    "text",
    ["0.0.0.0", "::", "255.255.255.255", "224.0.0.0", "239.255.255.255", "ff02::1", "fe80::1",
     "febf::1", "::ffff:0.0.0.0", "::ffff:255.255.255.255", "::ffff:224.0.0.1", "fe80::1%eth0"],
)  # fmt: skip
def test_unusable_endpoint_addresses(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        endpoint_address(text)
    assert info.value.field == "address"
