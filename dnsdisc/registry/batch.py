"""``POST /v1/batch``: up to MAX_OPS operations (register, deregister, service settings,
maintenance) read and checked before any is applied, then committed in one store transaction:
all or nothing. A bad operation is reported with its position (from 0) and field.

Body: ``{"ops": [{"op": "register", "service": S, "id": I, "body": {instance}}, {"op":
"deregister", "service": S, "id": I}, {"op": "service", "service": S, "body": {settings}},
{"op": "maintenance", "service": S, "id": I, "body": {"enabled": true, "reason": "..."}}]}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dnsdisc.errors import DnsdiscError, FieldError, ValidationError
from dnsdisc.registry.model import Instance, ServiceSettings, check_fields, maintenance_reason
from dnsdisc.registry.state import Memory
from dnsdisc.values import label

MAX_OPS = 128
KINDS = ("register", "deregister", "service", "maintenance")
_KEYS = ("op", "service", "id", "body")


class BatchError(FieldError):
    """One operation of a batch is wrong (or refused): the whole batch is, with its position."""

    def __init__(self, position: int, cause: DnsdiscError) -> None:
        message = getattr(cause, "message", str(cause))
        super().__init__(f"op {position}: {message}", getattr(cause, "field", ""))
        self.op = position
        self.cause = cause  # its status is this error's (errors.http_status_of)


@dataclass(frozen=True)
class BatchOp:
    kind: str
    service: str
    instance: str | None = None
    registration: Instance | None = None
    settings: ServiceSettings | None = None
    maintenance: str | None = None  # the reason, for maintenance on; None: off


def parse(body: object, defaults: Callable[[str], ServiceSettings]) -> list[BatchOp]:
    """The batch's operations, each checked as its own endpoint would check it; ``defaults``
    gives a service's settings that a settings op starts from."""
    if not isinstance(body, Mapping) or set(body) != {"ops"}:
        raise ValidationError("ops", 'the body must be {"ops": [operation, ...]}')
    ops = body["ops"]
    if not isinstance(ops, list) or not ops:
        raise ValidationError("ops", "ops must be a non-empty list of operations")
    if len(ops) > MAX_OPS:
        raise ValidationError("ops", f"at most {MAX_OPS} operations in one batch")
    out = []
    for position, raw in enumerate(ops):
        try:
            out.append(_one(raw, defaults))
        except DnsdiscError as exc:
            raise BatchError(position, exc) from None
    return out


def _one(raw: object, defaults: Callable[[str], ServiceSettings]) -> BatchOp:
    if not isinstance(raw, Mapping):
        raise ValidationError("op", "each operation must be a JSON object")
    check_fields(raw, _KEYS)
    kind = raw.get("op")
    if kind not in KINDS:
        raise ValidationError("op", f"op must be one of: {', '.join(KINDS)}")
    service = label(raw.get("service"), "service")
    body: Any = raw.get("body")
    if kind == "service":
        return BatchOp(
            kind,
            service,
            settings=ServiceSettings.from_json(service, body or {}, defaults(service)),
        )
    iid = label(raw.get("id"), "id")
    if kind == "register":
        return BatchOp(kind, service, iid, registration=Instance.from_json(service, iid, body))
    if kind == "deregister":
        if body is not None:
            raise ValidationError("body", "deregister takes no body")
        return BatchOp(kind, service, iid)
    return BatchOp(kind, service, iid, maintenance=maintenance_reason(body))


class Overlay:
    """What memory would hold after the operations of a batch checked so far, as the checks
    need it: whether an instance or a service is there, how many instances there are in all
    and per service, and the tags each service carries. It holds only what the batch touched
    and asks memory for the rest, so checking a batch costs its operations, not the registry
    (a bulk load of n instances in batches would otherwise cost O(n²))."""

    def __init__(self, memory: Memory) -> None:
        self._memory = memory
        # Touched instances: what is there after the batch so far (None: nothing).
        self._instances: dict[tuple[str, str], Instance | None] = {}
        self._added = 0  # instances the batch adds, less those it removes
        self._per_service: Counter[str] = Counter()  # the same per service
        self._tags: dict[str, Counter[str]] = {}  # per service: tag -> carriers added (or less)
        self._base: int | None = None  # instances in memory, counted when first asked for
        self._services: set[str] = set()  # created by the batch

    def current(self, service: str, iid: str) -> Instance | None:
        """The instance there now, as the batch left it."""
        if (service, iid) in self._instances:
            return self._instances[(service, iid)]
        state = self._memory.find(service, iid)
        return state.instance if state is not None else None

    def has(self, service: str, iid: str) -> bool:
        return self.current(service, iid) is not None

    def held(self, service: str) -> int:
        """The instances ``service`` holds."""
        svc = self._memory.get(service)
        return (len(svc.instances) if svc else 0) + self._per_service[service]

    def tag_counts(self, service: str) -> Counter[str]:
        """How many of ``service``'s instances carry each tag."""
        svc = self._memory.get(service)
        counts = Counter(svc.tag_counts()) if svc else Counter()  # a copy: memory's is cached
        counts.update(self._tags.get(service, {}))
        return counts

    def put(self, inst: Instance) -> bool:
        """Note an instance registered; True when it was not there (created)."""
        old = self._set(inst.service, inst.id, inst)
        return old is None

    def drop(self, service: str, iid: str) -> None:
        self._set(service, iid, None)

    def _set(self, service: str, iid: str, inst: Instance | None) -> Instance | None:
        old = self.current(service, iid)
        change = (inst is not None) - (old is not None)
        self._added += change
        self._per_service[service] += change
        tags = self._tags.setdefault(service, Counter())
        tags.subtract(old.tags if old else ())
        tags.update(inst.tags if inst else ())
        self._instances[(service, iid)] = inst
        return old

    def total(self) -> int:
        """The instances registered in all, those of zone files included."""
        if self._base is None:
            self._base = sum(len(s.instances) for s in self._memory)
        return self._base + self._added

    def has_service(self, name: str) -> bool:
        return name in self._services or self._memory.get(name) is not None

    def add_service(self, name: str) -> None:
        self._services.add(name)

    @property
    def services(self) -> int:
        return len(self._memory) + len(self._services)
