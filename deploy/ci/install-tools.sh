#!/usr/bin/env bash
# Tools the deploy tests (test/deploy/) need beyond npm packages, pinned and idempotent:
#   kustomize  renders deploy/k8s overlays offline (go install from the Go module proxy)
#   promtool   unit-tests deploy/observability/alerts.yaml (Debian's prometheus package)
# Run from anywhere; safe to run again (it only installs what is missing or at another version).
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1   # the newest whose go.mod builds with Go 1.26

log() { echo "[deploy-tools] $*"; }

GOBIN_DIR="$(go env GOPATH 2>/dev/null | cut -d: -f1)/bin"
[ "$GOBIN_DIR" != "/bin" ] || GOBIN_DIR="$HOME/go/bin"
if ! "$GOBIN_DIR/kustomize" version 2>/dev/null | grep -qx "${KUSTOMIZE_VERSION}"; then
  log "go install sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
  GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
fi
log "kustomize $("$GOBIN_DIR/kustomize" version)"

if ! command -v promtool >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "apt-get install prometheus (for promtool)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
log "$(promtool --version 2>&1 | head -1)"
