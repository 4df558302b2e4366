#!/usr/bin/env bash
# Set up a sandbox host for sandgate on Debian 12: system packages, npm dependencies, the build.
# Idempotent: re-running only installs what is missing. Used by scripts/demo.sh, scripts/test.sh,
# .ci/run and vagrant/Vagrantfile.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "provision: run as root (sandgate installs firewall rules and builds network namespaces)" >&2
  exit 1
fi

# Runtime: nftables (firewall), iptables (the iptables backend, and the nft backend's NFQUEUE
# rule), ipset (the iptables backend's sets of registered sandboxes), iproute2 (policy routing,
# namespaces), openssl (test PKI).
# The optional nfqueue binding (packet verdicts, docs/packets.md) is built by node-gyp against
# libnetfilter-queue: libnetfilter-queue-dev, make, g++ (python3 runs node-gyp's gyp).
# Tests and demo: curl, dig (dnsutils), ping, git (smart-HTTP client test), python3 (urllib test),
# chromium + libnss3-tools (certutil) for the headless-browser test (test/integration/browser.test.ts).
# Bench: wrk, nginx, haproxy, mitmproxy are installed by scripts/bench.sh, not here.
PACKAGES=(nftables iptables ipset iproute2 ca-certificates openssl curl dnsutils iputils-ping git python3 conntrack procps chromium libnss3-tools
  python3-httpx python3-h2
  libnetfilter-queue-dev make g++ tmux)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# systemd-analyze verifies the shipped unit (test/integration/service-unit.test.ts); its package
# is systemd, installed only where the tool is missing (a container without it).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "provision: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node.js 20 or newer (Debian 12's own nodejs is 18: too old; the Vagrantfile installs 20 first).
if ! command -v node >/dev/null 2>&1; then
  echo "provision: Node.js 20+ is required but node is not installed (see docs/operations.md)" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "provision: Node.js 20+ is required, found $(node --version) (see docs/operations.md)" >&2
  exit 1
fi

# npm dependencies exactly as locked. package.json's allowScripts approves the install scripts
# we rely on (sockopt's native addon, esbuild's binary check, nfqueue's node-gyp build); npm 11
# skips others.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ package.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
# nfqueue is optional: npm ci carries on when its build fails. Retry once the headers are here.
if [ -d node_modules/nfqueue ] && [ ! -f node_modules/nfqueue/build/Release/nfqueue.node ]; then
  npm rebuild nfqueue --loglevel=error || echo "provision: the nfqueue binding did not build; packet verdicts stay off (docs/packets.md)" >&2
fi
npm run --silent build
echo "provision: ok ($(node --version), $(/usr/sbin/nft --version))"
