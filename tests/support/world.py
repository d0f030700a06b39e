"""An in-process DNS world without sockets: config, zone files, registry, health and the answer
index wired as the server wires them, with a responder fed bytes (``World``); ``texts`` lists a
reply's records as text."""

from __future__ import annotations

import asyncio
import ipaddress
import random
from pathlib import Path

import dns.message

from dnsdisc.config import zones
from dnsdisc.config.load import Config
from dnsdisc.dnsserver.answer import Responder
from dnsdisc.health.monitor import HealthMonitor
from dnsdisc.registry.model import Instance, ServiceSettings
from dnsdisc.registry.registry import Registry
from dnsdisc.server.parts import attach, build_index


class World:
    """The answer path in one process: ``add``/``settings`` write through the registry as the
    HTTP API does, ``ask``/``raw`` put a query to the responder as a transport does."""

    def __init__(self, zone_dir: Path | None = None, **config: object) -> None:
        self.config = Config(**config)  # type: ignore[arg-type]
        zone_data = (
            zones.load_dir(zone_dir, self.config.domain, self.config.defaults)
            if zone_dir
            else zones.ZoneData()
        )
        self.index = build_index(self.config, zone_data)
        self.registry = Registry(defaults=self.config.defaults, reserved={"ns"})
        self.health = HealthMonitor(self.registry, self.config.health)
        attach(self.registry, self, self.health)
        for svc_settings, instances in zone_data.services:
            self.registry.add_static(svc_settings, instances)
        self.responder = Responder(self.index, random.Random(7))

    def add(self, service: str, iid: str, **body: object) -> None:
        asyncio.run(self.registry.put_instance(Instance.from_json(service, iid, body)))

    def settings(self, service: str, **body: object) -> None:
        asyncio.run(self.registry.put_service(ServiceSettings.from_json(service, body)))

    def ask(
        self,
        name: str,
        rdtype: str | int = "A",
        *,
        tcp: bool = False,
        source: str = "",
        **kw: object,
    ) -> dns.message.Message:
        """``source``: the client's address (its packet's source), e.g. "10.1.0.9"."""
        query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
        reply = self.responder.respond(query.to_wire(), tcp, packed(source))
        assert reply is not None
        msg = dns.message.from_wire(reply)
        assert msg.id == query.id
        return msg

    def raw(self, data: bytes, tcp: bool = False, source: str = "") -> bytes | None:
        return self.responder.respond(data, tcp, packed(source))  # type: ignore[return-value]


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed if address else b""


def texts(msg: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(rr.to_text() for rrset in getattr(msg, section) for rr in rrset)
