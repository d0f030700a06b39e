"""Unit tests of dnsdisc.api."""
