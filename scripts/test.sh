#!/usr/bin/env bash
# The test command: sets up (Debian packages, npm packages, build) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
npm test
