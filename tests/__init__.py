"""dnsdisc's tests: unit/ mirrors the dnsdisc packages, integration/ runs real servers and
clients, meta/ checks the import graph and the docs, support/ holds what they share."""
