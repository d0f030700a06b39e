"""Unit tests of dnsdisc.client."""
