#!/usr/bin/env bash
# Builds kustomize (sigs.k8s.io/kustomize/kustomize/v5) from the Go module proxy for the
# tests of deploy/ (test/deploy/manifests.test.ts), and prints its path. The binary is
# cached outside the repository, so a second run only prints the path:
#   ${HEAPTAP_CACHE:-~/.cache/heaptap}/kustomize-<version>/kustomize
# Usage: scripts/peers/kustomize.sh              build if needed, print the binary's path
#        KUSTOMIZE_VERSION=5.8.1 scripts/peers/kustomize.sh
# First build: about a minute on 2 cores. Debian 12's kubernetes-client (kubectl 1.20)
# embeds a kustomize too old for deploy/ (labels, patches with a path), hence this.
set -euo pipefail

. "$(dirname "$0")/go-tool.sh"
go_tool kustomize "${KUSTOMIZE_VERSION:-5.8.1}" version sigs.k8s.io/kustomize/kustomize/v5
