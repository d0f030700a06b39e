"""Unit tests of dnsdisc.registry."""
