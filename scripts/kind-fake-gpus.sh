#!/usr/bin/env bash
# Advertise fake GPUs on the kind workers that kind-config.yaml labels gensched.io/gpu-sim (no real GPUs):
# - the GPU Feature Discovery labels gensched reads: nvidia.com/gpu.product, nvidia.com/gpu.memory (MiB per GPU),
#   nvidia.com/gpu.count;
# - nvidia.com/gpu in capacity and allocatable, through the node's status subresource. The kubelet keeps an
#   extended resource it does not manage (no device plugin registers nvidia.com/gpu here) and admits pods that
#   request it, so a Job asking for nvidia.com/gpu schedules and runs.
# KUBECTL: the kubectl command (default: kubectl); it uses the current context or $KUBECONFIG.
set -euo pipefail
kubectl=${KUBECTL:-kubectl}
nodes=$($kubectl get nodes -l gensched.io/gpu-sim -o jsonpath='{.items[*].metadata.name}')
if [ -z "$nodes" ]; then
  echo "kind-fake-gpus: no node has the gensched.io/gpu-sim label (create the cluster from kind-config.yaml)" >&2
  exit 1
fi
for node in $nodes; do
  kind=$($kubectl get node "$node" -o jsonpath='{.metadata.labels.gensched\.io/gpu-sim}')
  case "$kind" in
    a100) product=NVIDIA-A100-SXM4-80GB; mem=81920; count=8 ;;
    l4)   product=NVIDIA-L4; mem=23034; count=4 ;;
    *) echo "kind-fake-gpus: node $node: gensched.io/gpu-sim=$kind is not a100 or l4" >&2; exit 1 ;;
  esac
  $kubectl label node "$node" --overwrite \
    nvidia.com/gpu.product=$product nvidia.com/gpu.memory=$mem nvidia.com/gpu.count=$count
  $kubectl patch node "$node" --subresource=status --type=merge \
    -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$count\"},\"allocatable\":{\"nvidia.com/gpu\":\"$count\"}}}"
  seen=$($kubectl get node "$node" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')
  if [ "$seen" != "$count" ]; then
    echo "kind-fake-gpus: node $node: allocatable nvidia.com/gpu is '$seen' after the patch, expected $count" >&2
    exit 1
  fi
  echo "node $node: $count x $product ($mem MiB)"
done
