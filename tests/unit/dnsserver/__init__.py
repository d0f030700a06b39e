"""Unit tests of dnsdisc.dnsserver."""
