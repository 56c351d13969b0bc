#!/usr/bin/env bash
# Advertise fake GPUs on kind workers: GFD-style labels plus nvidia.com/gpu capacity via the status subresource.
set -euo pipefail
kubectl=${KUBECTL:-kubectl}
for node in $($kubectl get nodes -l gensched.io/gpu-sim -o jsonpath='{.items[*].metadata.name}'); do
  kind=$($kubectl get node "$node" -o jsonpath='{.metadata.labels.gensched\.io/gpu-sim}')
  case "$kind" in
    a100) product=NVIDIA-A100-SXM4-80GB; mem=81920; count=8 ;;
    *)    product=NVIDIA-L4; mem=23034; count=4 ;;
  esac
  $kubectl label node "$node" --overwrite nvidia.com/gpu.product=$product nvidia.com/gpu.memory=$mem nvidia.com/gpu.count=$count
  $kubectl patch node "$node" --subresource=status --type=merge \
    -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$count\"},\"allocatable\":{\"nvidia.com/gpu\":\"$count\"}}}"
done
