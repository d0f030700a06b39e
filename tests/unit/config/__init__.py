"""Unit tests of dnsdisc.config."""
