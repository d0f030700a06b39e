"""The DNS face: wire format, naming scheme, answer index, responder and transports."""
