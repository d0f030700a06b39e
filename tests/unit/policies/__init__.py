"""Unit tests of dnsdisc.policies."""
