"""What is registered: services and their instances, in memory, written through a store.

Modules: ``model`` the validated values (Instance, ServiceSettings, HeartbeatReport,
the statuses); ``checks`` an instance's CheckSpec and the rules for checks registered over
the API; ``settings`` what the config tells the registry; ``state`` InstanceState, Service
and Memory, the only code that changes what is held; ``events`` the announcements of changes;
``registry`` the Registry, the one way in for the rest of the program; ``replication``
following a shared store; ``queries`` the named queries' value (QueryDef).

Glossary (one meaning each):

service
    A name answered in DNS, with its ServiceSettings (policy, TTL, ...) and its instances
    (a ``Service`` in memory).
instance
    One endpoint of a service (an ``Instance``: address, port, weight, ...), immutable; changing
    one is registering it again.
InstanceState
    An instance plus what changes without a re-registration: heartbeats, reported figures
    (load, latency) and its health status with that status's bookkeeping.
status
    The health verdict of leases, checks and heartbeats: passing, warning or critical. The
    *effective* status is ``maintenance`` while an instance is in maintenance, else its status.
static
    Defined by a zone file (a named query: by the config's ``queries:``): never stored, never
    changed over HTTP, never replaced by a change from a shared store.
reserved
    A service name nobody may register (the name server's host, a name a zone file's record
    holds), with the reason.
memory
    The services this process holds (``Memory``: Service by name, each with its
    InstanceStates). Only ``Memory``'s methods change it, called by the Registry (writes a store
    has committed, static services, health verdicts) and by the ``Follower`` (a shared store's
    changes). The Registry is the only way in for the rest of the program.
shared store
    A store several nodes write (etcd): memory then changes only through the Follower, in the
    store's order, for this node's writes and every other node's alike.
barrier
    What the Registry awaits before acknowledging a change a client asked for (``set_barrier``;
    the DNS worker pool's): it returns once every other reader answers from the new state.
settled
    ``Registry.settled()``: awaiting the barrier; the registry is settled when every reader has
    seen every change made so far.
"""
