"""What the registry is told by the config, as one value swapped whole on reload: the defaults
for services nobody configured, the configured services, the names nobody may register, and
the caps on what is held."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dnsdisc.registry.limits import Limits
from dnsdisc.registry.model import ServiceSettings

NS_HOST = "it is the name server's host name"


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    defaults: ServiceSettings = field(default_factory=lambda: ServiceSettings("default"))
    configured: Mapping[str, ServiceSettings] = field(default_factory=lambda: MappingProxyType({}))
    # service name -> why it cannot be registered (the NS host, a zone file's record)
    reserved: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        # Read-only copies: a caller's dict changing later must not change the registry's view.
        object.__setattr__(self, "configured", MappingProxyType(dict(self.configured)))
        object.__setattr__(self, "reserved", MappingProxyType(dict(self.reserved)))

    def for_service(self, name: str) -> ServiceSettings:
        """What a service gets when nobody set its settings through the API."""
        return self.configured.get(name) or self.defaults.with_name(name)
