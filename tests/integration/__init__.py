"""Tests against real dnsdisc processes, real DNS clients and resolvers; all marked integration."""
