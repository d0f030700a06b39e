#!/usr/bin/env bash
# Installs everything the tests need and runs the whole suite (lint, types, tests).
# System tools come from Debian's packages (needs root the first time; CI runs as root);
# Python packages go into .venv. Extra arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# tool -> Debian package that provides it: every system tool a test asks for by name
# (tests/meta/test_tools.py checks that each require_tool("...") is listed here).
declare -A PACKAGES=(
  [dig]=bind9-dnsutils [kdig]=knot-dnsutils [unbound]=unbound [dnsmasq]=dnsmasq-base
  [ip]=iproute2 [ss]=iproute2 [getent]=libc-bin [curl]=curl [chromium]=chromium
  [etcd]=etcd-server [etcdctl]=etcd-client [dpkg]=dpkg [openssl]=openssl
  [pdns_recursor]=pdns-recursor [kresd]=knot-resolver [haproxy]=haproxy
  [prometheus]=prometheus [unshare]=util-linux [mount]=mount
  [node]=nodejs [npm]=nodejs
  [nsd]=nsd [knotd]=knot [named]=bind9 [delv]=bind9-dnsutils
)
missing=()
for tool in "${!PACKAGES[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("${PACKAGES[$tool]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    # sort -u: several tools may come from one package
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    # Daemons among them (pdns-recursor, haproxy, prometheus on :9090) must not start as system
    # services on install: tests start their own. policy-rc.d's 101 tells invoke-rc.d "not now".
    added_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      added_policy=1
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT  # also if the install fails
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ -n "$added_policy" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  else
    echo "missing system packages: ${missing[*]} (install them, or run as root to let this script)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,etcd]'
# Console scripts of the test extras that the checks and tests run (tests/meta/test_imports.py
# runs lint-imports from this .venv): a clear error here rather than a failed test later.
for tool in ruff mypy lint-imports; do
  [ -x ".venv/bin/$tool" ] || { echo "the test extras did not install $tool into .venv" >&2; exit 1; }
done
# node-consul for tests/integration/test_consul.py, at the version its lock file pins.
(cd tests/consul-js && npm ci --silent --no-audit --no-fund)
.venv/bin/ruff check dnsdisc tests bench fuzz
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
