# dnsdisc: DNS on 8053 (UDP and TCP), HTTP API on 8054, registry in /data.
#   docker build -t dnsdisc .
#   docker run -p 8053:8053/udp -p 8053:8053/tcp -p 8054:8054 -e DNSDISC_TOKEN=secret dnsdisc
# Config by mount: -v ./dnsdisc.yaml:/etc/dnsdisc/dnsdisc.yaml and add
#   --config /etc/dnsdisc/dnsdisc.yaml to the command; zone files: -v ./zones:/etc/dnsdisc/zones
# The base image by digest: the multi-arch index of python:3.11-slim (3.11-slim-trixie) pushed
# 2026-08-16; a new digest is a reviewed change like a dependency bump (docs/security.md).
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

WORKDIR /src
# Dependencies only from the lock, each checked against its hash; dnsdisc itself is then built
# with the locked setuptools and no index access (no build isolation, no dependency resolution).
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY dnsdisc ./dnsdisc
RUN pip install --no-cache-dir --no-deps --no-build-isolation --no-index . \
    && pip check \
    && useradd --system --uid 10001 --home-dir /data dnsdisc \
    && mkdir -p /data /etc/dnsdisc/zones \
    && chown dnsdisc /data

USER dnsdisc
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8053/udp 8053/tcp 8054/tcp

# The listeners bind 0.0.0.0 inside the container, so the server refuses to start without
# authentication: pass DNSDISC_TOKEN (or a config with acl.tokens or mutual TLS), or add
# --http-allow-insecure to the command if only trusted hosts can reach the port.
# /readyz, not /healthz: 503 while the store is unreachable or a DNS worker is being replaced.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8054/readyz', timeout=2).status != 200)"

ENTRYPOINT ["dnsdisc"]
CMD ["serve", "--dns", "0.0.0.0:8053", "--http", "0.0.0.0:8054", "--data-dir", "/data", "--zones", "/etc/dnsdisc/zones"]
