"""The process's descriptor limit, raised at start, and the HTTP limits that fit under it."""

from __future__ import annotations

import logging
import resource

from dnsdisc.api.settings import HttpLimits
from dnsdisc.config.load import Config

log = logging.getLogger("dnsdisc.server.limits")

# Descriptors kept for everything but HTTP connections: the DNS listeners and TCP clients of the
# main process, the workers' feeds and fences, the store, the health checks' connections.
RESERVED = 512


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as nginx's worker_rlimit_nofile or
    systemd's services do: the soft default (often 1,024) is what 1,100 half-sent HTTP requests
    exhausted, after which a DNS worker could not be started again. The limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20  # the kernel's usual nr_open; more is refused
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
            return soft
        log.info("raised the open-file limit (RLIMIT_NOFILE) from %d to %d", soft, hard)
        return hard
    return soft if soft != resource.RLIM_INFINITY else hard


def http_limits(config: Config, nofile: int) -> HttpLimits:
    """The configured HTTP limits, with the connection cap lowered to fit the descriptors."""
    cap = config.http_max_connections
    fits = max(16, nofile - RESERVED)
    if cap > fits:
        log.warning(
            "http.max_connections is %d but the open-file limit is %d: at most %d HTTP "
            "connections are kept open (raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn)",
            cap,
            nofile,
            fits,
        )
        cap = fits
    return HttpLimits(
        header_timeout=config.http_header_timeout,
        body_timeout=config.http_body_timeout,
        keepalive_timeout=config.http_keepalive_timeout,
        max_connections=cap,
        max_connections_per_client=min(config.http_max_connections_per_client, cap),
    )
