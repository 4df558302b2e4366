#!/bin/sh
# Installs the tools `npm run bench` drives (Debian/Ubuntu, as root), skipping what is present:
# wrk (load generator), h2load (HTTP/2 load generator, from nghttp2-client), nginx (HTTPS upstream), haproxy (reference proxy), mitmproxy (second
# reference, optional: the bench skips it if it does not run), hyperfine, openssl.
# Idempotent; makes no network change of its own (apt-get only).
set -eu

need=""
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have wrk       || need="$need wrk"
have h2load    || need="$need nghttp2-client"
have nginx     || need="$need nginx"
have haproxy   || need="$need haproxy"
have mitmdump  || need="$need mitmproxy"
have hyperfine || need="$need hyperfine"
have openssl   || need="$need openssl"
have ip        || need="$need iproute2"
have nft       || need="$need nftables"
have timeout   || need="$need coreutils"

if [ -z "$need" ]; then
  echo "bench-setup: all tools present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "bench-setup: missing:$need; run as root (or install them) and retry" >&2
  exit 1
fi
echo "bench-setup: installing:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends $need >/dev/null
# Debian starts nginx and haproxy as system services on install; the bench runs its own copies
# inside its namespaces, so stop the system ones if this script just installed them (they would
# only hold ports 80/443 in the root namespace, which the bench never uses).
for svc in nginx haproxy; do
  case "$need" in
    *"$svc"*) if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi ;;
  esac
done
echo "bench-setup: done"
