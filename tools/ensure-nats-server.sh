#!/bin/sh
# The NATS tests and bench start a real nats-server (Debian's package) on 127.0.0.1. This makes
# sure one is installed: as root, from Debian's packages; otherwise it says how.
set -eu
if command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing nats-server (Debian's package) for the NATS tests" >&2
  apt-get install -y nats-server >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && apt-get install -y nats-server >/dev/null; }
  exit 0
fi
echo "the NATS tests need nats-server: run 'sudo apt-get install -y nats-server' (Debian, Ubuntu)" >&2
exit 1
