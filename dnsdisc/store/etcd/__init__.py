"""The etcd backend: several dnsdisc nodes share one registry kept in etcd (``storage: etcd``).

It speaks etcd's v3 JSON gateway (``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/watch``,
``/v3/lease/*``) over aiohttp, which dnsdisc already depends on, rather than gRPC: no native
gRPC/protobuf wheels to install, and the whole protocol surface used here is a dozen lines.

Modules, each one concern, imported as ``dnsdisc.store.etcd.store.EtcdStore`` (lazily, by
``open_store``):

    gateway   the HTTP/JSON client: endpoints, TLS, auth token, timeouts, endpoint failover
    keys      the key schema under the prefix and its encoding on the gateway (base64, JSON)
    watch     this node's view of etcd: the range load, the watch that feeds the registry in
              revision order, the resync after a compaction, the instances' leases
    election  who runs the active checks, and the quorum probe behind ``stale``
    store     EtcdStore, the SharedStore: open/commit/close, Op -> etcd txn, composes the rest

Glossary: a *revision* is etcd's global change counter (the watch delivers changes in its
order); a *lease* is etcd's TTL that takes its keys with it when it runs out; the *leader* is the
node that runs the active health checks (nothing to do with etcd's own raft leader).
"""
