"""Unit tests, one package per dnsdisc package and one test_<module>.py per module."""
