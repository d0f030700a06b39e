"""Unit tests of dnsdisc.workers."""
