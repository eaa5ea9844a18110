#!/usr/bin/env bash
# The test command: sets up (Debian packages, npm packages, build: scripts/setup.sh for
# heaptap, then scripts/setup-tests.sh for the tests) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-tests.sh
# Real peers the tests talk to (an OpenTelemetry Collector, kustomize, promtool, kubeconform
# and its schemas, Helm), built from the Go module proxy, a Debian 11 root (debootstrap),
# and the stand-in base images of the image test (a private Docker engine), all cached in
# ~/.cache/heaptap: minutes the first time on a machine, nothing afterwards. Not part of the
# setup scripts: only the tests talk to them.
npm run --silent peers
npm test
# The benchmark harness at small sizes (bench/run.sh --quick, about 1.5 minutes on 2 cores
# once its Debian packages are installed): every overhead and accuracy configuration must
# run and give its numbers; the numbers themselves are not checked.
npm run bench:quick
