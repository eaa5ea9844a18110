#!/usr/bin/env bash
# Builds Helm (helm.sh/helm/v3) from the Go module proxy for the tests of the chart in
# deploy/helm/heaptap (test/deploy/helm.test.ts: helm lint, helm template, then kubeconform
# and the pod runner on what it renders), and prints its path. Cached outside the
# repository, so a second run only prints the path:
#   ${HEAPTAP_CACHE:-~/.cache/heaptap}/helm-<version>/helm
# Usage: scripts/peers/helm.sh              build if needed, print the binary's path
#        HELM_VERSION=3.22.1 scripts/peers/helm.sh
# First build: 2 to 4 minutes on 2 cores (it shares most modules with kustomize's).
set -euo pipefail

. "$(dirname "$0")/go-tool.sh"
version="${HELM_VERSION:-3.22.1}"
# -ldflags: the version Helm reports (a release build sets it the same way).
go_tool helm "$version" "version --short" helm.sh/helm/v3/cmd/helm \
  -ldflags "-X helm.sh/helm/v3/internal/version.version=v$version"
