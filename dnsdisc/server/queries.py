"""Keeps the named queries' answers current: a query's names are rebuilt into the answer sink
when the query changes, and when any service its chain names changes (the step it answers from
may change with the health of another service). Templates (``template: prefix``) are built for
every ``${match}`` under which they name an existing service; a plain query of the same name
wins. Which step answers, and with which instances, is ``health.queries.choose``'s.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping

from dnsdisc.dnsserver.names import is_query_key, query_key
from dnsdisc.dnsserver.view import AnswerSink
from dnsdisc.health.handout import Member
from dnsdisc.health.monitor import HealthMonitor
from dnsdisc.health.queries import Chosen, choose
from dnsdisc.registry.model import Instance, ServiceSettings
from dnsdisc.registry.queries import QueryDef
from dnsdisc.registry.registry import Registry

log = logging.getLogger(__name__)


class _Counted:
    """A member as a query hands it out: answers it leads count for the query too (in this
    process; DNS workers count per query in their own tallies, see ``absorb``)."""

    __slots__ = ("answers", "key", "member")

    def __init__(self, member: Member, answers: Counter[tuple[str, str]], key: tuple[str, str]):
        self.member = member
        self.answers = answers
        self.key = key

    @property
    def instance(self) -> Instance:
        return self.member.instance

    @property
    def weight(self) -> int:
        return self.member.weight

    @property
    def priority(self) -> int:
        return self.member.priority

    @property
    def role(self) -> int:
        return self.member.role

    @property
    def load(self) -> float | None:
        return self.member.load

    @property
    def latency_ms(self) -> float | None:
        return self.member.latency_ms

    def handed_out(self) -> None:
        self.member.handed_out()
        self.answers[self.key] += 1


class QueryAnswers:
    def __init__(
        self, registry: Registry, health: HealthMonitor, sink: Callable[[], AnswerSink]
    ) -> None:
        self.registry = registry
        self.health = health
        self.sink = sink  # the current answer sink (a reload swaps it)
        # What is built: name -> the definition it was built from (a template's instance for
        # a templated name), and the step it answers from.
        self.built: dict[str, QueryDef] = {}
        self.step: dict[str, int] = {}
        self._by_service: dict[str, set[str]] = {}
        # How often each query moved to a failover step, and the address answers it led with
        # an instance of its own service ("own") or of a failover step (for /metrics).
        self.failovers: Counter[str] = Counter()
        self.answers: Counter[tuple[str, str]] = Counter()
        # The DNS workers' tallies of each query's members as last absorbed: (name, instance
        # id) -> (its service, the count).
        self._tallies: dict[tuple[str, str], tuple[str, int]] = {}
        # The templates by name, and sorted (``_templates``) when they last changed.
        self._template_defs: dict[str, QueryDef] = {}
        self._templates_sorted: list[QueryDef] | None = None

    # -- what changed ------------------------------------------------------------------------

    def service_changed(self, service: str) -> None:
        """``service`` changed (its instances, health or settings, or it came or went)."""
        done: set[str] = set()
        queries = self.registry.queries
        for name in list(self._by_service.get(service, ())):
            if name in queries:  # a plain query; a template's names are looked at below
                self._build(name, self.built[name])
                done.add(name)
        templates = self._templates()
        if not templates:
            return
        for template in templates:
            for match in template.matches_for((service,)):
                name = template.name + match
                if name in done:
                    continue
                done.add(name)
                owner = self._owner(name, templates)
                if owner is None:
                    if name in self.built and name not in self.registry.queries:
                        self._drop(name)
                elif self.built.get(name) != owner:
                    self._build(name, owner)

    def query_changed(self, name: str) -> None:
        """The definition of ``name`` changed (or went)."""
        q = self.registry.queries.get(name)
        was_template = name in self._template_defs
        self._note_template(name, q)
        if q is not None and q.template is None:
            self._build(name, q)
        elif name in self.built and (q is None or q.template is not None):
            self._drop(name)
        if was_template or name in self._template_defs:
            self._retemplate()  # a template came, changed or went: every name it makes
        elif q is None and self._template_defs:
            # A plain query went: a template may make its name.
            owner = self._owner(name, self._templates())
            if owner is not None:
                self._build(name, owner)

    def rebuild_all(self) -> None:
        """Every query into the sink again (a reload built a new index); the step each
        answers from is kept, so a query already in failover is not counted as moving again."""
        self.built.clear()
        self._by_service.clear()
        self._template_defs.clear()
        self._templates_sorted = None
        for name, q in self.registry.queries.items():
            self._note_template(name, q)
        self._retemplate()
        for name, q in self.registry.queries.items():
            if q.template is None:
                self._build(name, q)

    def absorb(self, tallies: Mapping[tuple[str, str], int]) -> None:
        """Take the DNS workers' answer tallies (by (sink key, instance id), cumulative while
        the member stays): what grew since the last look counts for its query, as "own" or
        "failover" by the step the query answers from. A tally that went down restarted."""
        seen = self._tallies
        kept: dict[tuple[str, str], tuple[str, int]] = {}
        for (key, iid), n in tallies.items():
            if not is_query_key(key):
                continue
            name = key.rpartition(".")[0]
            q = self.built.get(name)
            if q is None:
                continue
            # Its members are all of the step it answers from (between two looks it may have
            # moved: the answers then count for the step it is on now).
            step = self.step.get(name, -1)
            service = q.steps[step].service if step >= 0 else ""
            before = seen.get((name, iid))
            grew = n - before[1] if before is not None and before[0] == service else n
            if grew < 0:
                grew = n
            if grew:
                kind = "own" if service == q.steps[0].service else "failover"
                self.answers[(name, kind)] += grew
            kept[(name, iid)] = (service, n)
        # Only the members the workers still count: bounded by the queries' members now.
        self._tallies = kept

    def figures(
        self,
        service: str,
        iid: str,
        load: float | None,
        latency: float | None,
        send: Callable[[str, str, float | None, float | None], None],
        reads_figures: Collection[str] = ("least_loaded", "latency"),
    ) -> None:
        """An instance's reported load and latency, for the queries answering with it (DNS
        workers keep a copy of each query's members; in this process they are the same)."""
        svc = self.registry.get(service)
        for name in self._by_service.get(service, ()):
            step, q = self.step.get(name, -1), self.built[name]
            policy = q.policy or (svc.settings.policy if svc is not None else "")
            if step >= 0 and q.steps[step].service == service and policy in reads_figures:
                send(query_key(name), iid, load, latency)

    def status(self, name: str) -> tuple[QueryDef, int] | None:
        """A built query's definition (a template's instance for a templated name) and the
        step it answers from; None when no such name is built."""
        q = self.built.get(name)
        return None if q is None else (q, self.step.get(name, -1))

    def snapshot(self) -> list[tuple[str, ServiceSettings, list[Member]]]:
        """Every built query as a new DNS worker is sent it (``_snapshot``)."""
        out = []
        for name, q in self.built.items():
            chosen = choose(q, self.registry.get, self.health.view)
            out.append((query_key(name), chosen.settings, chosen.members))
        return out

    # -- building ----------------------------------------------------------------------------

    def _templates(self) -> list[QueryDef]:
        """The templates, longest name first: where two make the same name, the longer (more
        specific) prefix owns it, on every node and after every restart."""
        if self._templates_sorted is None:
            self._templates_sorted = sorted(
                self._template_defs.values(), key=lambda q: (-len(q.name), q.name)
            )
        return self._templates_sorted

    def _note_template(self, name: str, q: QueryDef | None) -> None:
        """Keep the template list as ``name`` is now (a template, or not one)."""
        if q is not None and q.template is not None:
            if self._template_defs.get(name) != q:
                self._template_defs[name] = q
                self._templates_sorted = None
        elif self._template_defs.pop(name, None) is not None:
            self._templates_sorted = None

    def _owner(self, name: str, templates: list[QueryDef]) -> QueryDef | None:
        """What answers ``name`` for the templates: the instance of the longest template
        prefix that makes it and names an existing service; None when a plain query has the
        name or no template makes it."""
        if name in self.registry.queries:
            return None
        for template in templates:
            if name.startswith(template.name) and len(name) > len(template.name):
                inst = template.instantiate(name[len(template.name) :])
                if any(self.registry.get(s) is not None for s in inst.services):
                    return inst
        return None

    def _retemplate(self) -> None:
        """Build every template instance that names an existing service, drop those that no
        longer come from a template (or are shadowed by a plain query)."""
        templates = self._templates()
        services = [s.settings.name for s in self.registry] if templates else []
        wanted: dict[str, QueryDef] = {}
        for template in templates:
            for match in template.matches_for(services):
                name = template.name + match
                if name not in wanted and (owner := self._owner(name, templates)) is not None:
                    wanted[name] = owner
        queries = self.registry.queries
        for name in list(self.built):
            plain = queries.get(name)
            if (plain is None or plain.template is not None) and name not in wanted:
                self._drop(name)
        for name, inst in wanted.items():
            if self.built.get(name) != inst:
                self._build(name, inst)

    def _build(self, name: str, q: QueryDef) -> None:
        old = self.built.get(name)
        if old is not None:
            self._unindex(name, old)
        self.built[name] = q
        for service in q.services:
            self._by_service.setdefault(service, set()).add(name)
        chosen: Chosen = choose(q, self.registry.get, self.health.view)
        before = self.step.get(name)
        self.step[name] = chosen.step
        if chosen.step > 0 and before != chosen.step:
            self.failovers[name] += 1
            log.info("query %s answers from failover step %d (%s)", name, chosen.step,
                     q.steps[chosen.step].service)  # fmt: skip
        elif before is not None and before > 0 and chosen.step <= 0:
            log.info("query %s answers from its own service %s again", name, q.steps[0].service)
        kind = "own" if chosen.step <= 0 else "failover"
        members = [_Counted(m, self.answers, (name, kind)) for m in chosen.members]
        self.sink().rebuild(query_key(name), chosen.settings, members)

    def _drop(self, name: str) -> None:
        old = self.built.pop(name, None)
        if old is not None:
            self._unindex(name, old)
        self.step.pop(name, None)
        # Its series leave /metrics with it (a catch-all template makes one name per service).
        self.failovers.pop(name, None)
        for kind in ("own", "failover"):
            self.answers.pop((name, kind), None)
        self.sink().rebuild(query_key(name), None, ())

    def _unindex(self, name: str, q: QueryDef) -> None:
        for service in q.services:
            names = self._by_service.get(service)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._by_service[service]
