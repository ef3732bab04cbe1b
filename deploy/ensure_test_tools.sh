#!/usr/bin/env bash
# Install the Debian packages the test suite drives, when missing: chromium (browser tests,
# through Playwright's executable_path: a test tool's own browser download cannot work here),
# nginx (the reverse proxy in front of the gateways) and docker-compose (its `config -q`
# validates docker-compose.yml without a Docker engine). Idempotent.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages for the tests: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
