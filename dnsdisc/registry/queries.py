"""Named queries (Consul's prepared queries): a DNS name bound to a stored query over the
registry: a service, tags that must (``tag``) or must not (``!tag``) be there, exact metadata
matches, whether warning instances count, overrides of the service's answer settings, and a
failover chain of other services tried in order when a step hands out too few instances.

``QueryDef`` is the validated value, from the API (``PUT /v1/queries/{name}``), the config's
``queries:`` or the store; ``Step`` is one link of its chain. A ``template: prefix`` query named
``near-`` answers every ``near-<match>``, with ``${match}`` in its services replaced
(``instantiate``). Which instances a query hands out is decided where health is known
(``health.queries``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dnsdisc.errors import ValidationError
from dnsdisc.policies.balance import POLICIES
from dnsdisc.registry.model import LOCALITY_MODES, MAX_DNS_TTL, MAX_TAGS, check_fields, meta_map
from dnsdisc.values import bounded_int, label

QUERY_FIELDS = (
    "service",
    "tags",
    "meta",
    "only_passing",
    "policy",
    "max_answers",
    "ttl",
    "locality",
    "failover",
    "failover_min_healthy",
    "template",
)
STEP_FIELDS = ("service", "tags")
TEMPLATES = ("prefix",)
MATCH = "${match}"
MAX_FAILOVER = 16
# The label under the domain that query names live under: no service may be called this.
QUERY_LABEL = "query"
# A template's name: the start of a label (it may end with "-").
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{0,61}$")
# A service field of a template: a DNS label with ${match} in it.
_PATTERN = re.compile(r"^[a-z0-9-]*\$\{match\}[a-z0-9-]*$")


@dataclass(frozen=True, slots=True)
class Step:
    """One service the query may answer from, with the tags its instances must carry
    (``include``) and must not carry (``exclude``)."""

    service: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def tags_json(self) -> list[str]:
        return [*self.include, *(f"!{t}" for t in self.exclude)]

    def matches(self, tags: Iterable[str]) -> bool:
        have = set(tags)
        return all(t in have for t in self.include) and not any(t in have for t in self.exclude)


@dataclass(frozen=True, slots=True)
class QueryDef:
    """A named query, validated. ``steps[0]`` is its own service; the rest, its failover."""

    name: str
    steps: tuple[Step, ...]
    meta: tuple[tuple[str, str], ...] = ()
    only_passing: bool = False
    policy: str | None = None
    max_answers: int | None = None
    ttl: int | None = None
    locality: str | None = None
    failover_min_healthy: int = 1
    template: str | None = None
    static: bool = False  # from the config file: read-only over the API
    # Which fields were given (to_json shows only those: a PUT body comes back as sent).
    given: tuple[str, ...] = field(default=(), compare=False)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(s.service for s in self.steps)

    @classmethod
    def from_json(cls, name: object, body: object, *, static: bool = False) -> QueryDef:
        template = body.get("template") if isinstance(body, Mapping) else None
        if template is not None and template not in TEMPLATES:
            raise ValidationError("template", f"template must be one of: {', '.join(TEMPLATES)}")
        if template is None:
            qname = label(name, "name")
        elif not isinstance(name, str) or not _PREFIX.fullmatch(name.lower()):
            raise ValidationError(
                "name",
                "a template's name is the start of a DNS label: 1-62 of a-z, 0-9 and '-', "
                "not starting with '-'",
            )
        else:
            qname = name.lower()
        if not isinstance(body, Mapping):
            raise ValidationError("body", "the body must be a JSON object")
        check_fields(body, QUERY_FIELDS)
        if "service" not in body:
            raise ValidationError("service", "service is required")
        first = _step({"service": body["service"], "tags": body.get("tags", [])}, "", template)
        failover = body.get("failover", [])
        if not isinstance(failover, list) or len(failover) > MAX_FAILOVER:
            raise ValidationError(
                "failover", f"failover must be a list of at most {MAX_FAILOVER} steps"
            )
        steps = [first]
        for n, raw in enumerate(failover):
            if isinstance(raw, str):
                raw = {"service": raw}
            steps.append(_step(raw, f"failover[{n}].", template))
        seen: set[str] = set()
        for step in steps:
            if step.service in seen:
                raise ValidationError(
                    "failover", f"service {step.service!r} appears twice in the chain (a loop)"
                )
            seen.add(step.service)
        if template is not None and not any(MATCH in s.service for s in steps):
            raise ValidationError("service", f"a template names its services with {MATCH}")
        only_passing = body.get("only_passing", False)
        if not isinstance(only_passing, bool):
            raise ValidationError("only_passing", "only_passing must be true or false")
        policy = body.get("policy")
        if policy is not None and (not isinstance(policy, str) or policy not in POLICIES):
            raise ValidationError("policy", f"policy must be one of: {', '.join(sorted(POLICIES))}")
        locality = body.get("locality")
        if locality is False:
            locality = "off"  # YAML reads a bare ``off`` as false
        if locality is not None and (
            not isinstance(locality, str) or locality not in LOCALITY_MODES
        ):
            raise ValidationError(
                "locality", f"locality must be one of: {', '.join(LOCALITY_MODES)}"
            )
        max_answers = body.get("max_answers")
        ttl = body.get("ttl")
        return cls(
            name=qname,
            steps=tuple(steps),
            meta=meta_map(body.get("meta", {})),
            only_passing=only_passing,
            policy=policy,
            max_answers=None
            if max_answers is None
            else bounded_int(max_answers, "max_answers", 1, 1000),
            ttl=None if ttl is None else bounded_int(ttl, "ttl", 0, MAX_DNS_TTL),
            locality=locality,
            failover_min_healthy=bounded_int(
                body.get("failover_min_healthy", 1), "failover_min_healthy", 1, 65535
            ),
            template=template,
            static=static,
            given=tuple(k for k in QUERY_FIELDS if k in body),
        )

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, **self.definition(), "static": self.static}
        out.setdefault("failover", [])
        return out

    def definition(self) -> dict[str, Any]:
        """The body that recreates this query (what the store keeps)."""
        first = self.steps[0]
        out: dict[str, Any] = {"service": first.service}
        if first.include or first.exclude:
            out["tags"] = first.tags_json()
        if self.meta:
            out["meta"] = dict(self.meta)
        if self.only_passing:
            out["only_passing"] = True
        for key in ("policy", "max_answers", "ttl", "locality", "template"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.failover_min_healthy != 1:
            out["failover_min_healthy"] = self.failover_min_healthy
        if len(self.steps) > 1:
            out["failover"] = [
                {"service": s.service, "tags": s.tags_json()}
                if (s.include or s.exclude)
                else s.service
                for s in self.steps[1:]
            ]
        return out

    def instantiate(self, match: str) -> QueryDef:
        """A template's query for the name ``<prefix><match>``: ``${match}`` replaced."""
        steps = tuple(replace(s, service=s.service.replace(MATCH, match)) for s in self.steps)
        return replace(self, name=self.name + match, steps=steps, template=None)

    def matches_for(self, services: Iterable[str]) -> set[str]:
        """The ``${match}`` values under which this template names one of ``services``, and
        that make a valid name: the instances of the template worth building."""
        out: set[str] = set()
        for step in self.steps:
            head, _, tail = step.service.partition(MATCH)
            for name in services:
                if name.startswith(head) and name.endswith(tail):
                    end = len(name) - len(tail)
                    if end > len(head):
                        match = name[len(head) : end]
                        if _valid_label(self.name + match):
                            out.add(match)
        return out


def _valid_label(text: str) -> bool:
    try:
        label(text, "name")
    except ValidationError:
        return False
    return True


def _step(raw: object, where: str, template: str | None) -> Step:
    if not isinstance(raw, Mapping):
        raise ValidationError(f"{where}service" if where else "failover", "a step is an object")
    for key in raw:
        if key not in STEP_FIELDS:
            raise ValidationError(
                f"{where}{key}", f"unknown field {where}{key}; expected: service, tags"
            )
    service = raw.get("service")
    fld = f"{where}service"
    if template is not None and isinstance(service, str) and MATCH in service:
        if not _PATTERN.fullmatch(service.lower()):
            raise ValidationError(fld, f"{fld} must be a DNS label with {MATCH} in it")
        service = service.lower()
    else:
        service = label(service, fld)
        if service == QUERY_LABEL:
            raise ValidationError(fld, f"{QUERY_LABEL!r} is reserved for query names")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise ValidationError(f"{where}tags", f"tags must be a list of at most {MAX_TAGS} tags")
    include: list[str] = []
    exclude: list[str] = []
    for tag in tags:
        if isinstance(tag, str) and tag.startswith("!"):
            exclude.append(label(tag[1:], f"{where}tags"))
        else:
            include.append(label(tag, f"{where}tags"))
    return Step(service, tuple(dict.fromkeys(include)), tuple(dict.fromkeys(exclude)))
