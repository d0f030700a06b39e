"""Unit tests of dnsdisc.health."""
