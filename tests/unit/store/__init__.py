"""Unit tests of dnsdisc.store."""
