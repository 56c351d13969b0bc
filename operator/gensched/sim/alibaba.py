"""Read the Alibaba PAI GPU trace (openb CSVs, as used by the FGD paper) into packing inputs.

Node CSV columns: ``sn,cpu_milli,memory_mib,gpu,model`` and, optionally, ``mig_profile`` (for example
``1g.10gb``: every GPU of that node MIG-partitioned into instances of that profile).
Pod CSV columns: ``name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,...,creation_time,deletion_time,...``.
A user's own cluster export in the same columns works the same way (docs/packing.md). Bad rows are
reported with file, line and reason, never skipped silently.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from gensched.packing import GpuNode, GpuRequest
from gensched.packing.cluster import MAX_GPUS, MILLI
from gensched.packing.mig import MigProfile

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


@dataclass
class TracePod:
    request: GpuRequest
    created: int | None = None
    deleted: int | None = None


@dataclass
class LoadReport:
    rejected: list[str] = field(default_factory=list)  # "file:line: reason"

    def add(self, path: Path, line: int, reason: str) -> None:
        self.rejected.append(f"{path.name}:{line}: {reason}")


def _check_columns(path: Path, header: list[str] | None, needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in (header or [])]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected at least {', '.join(needed)}")


def load_nodes(path: Path, report: LoadReport | None = None, gpu_only: bool = True) -> list[GpuNode]:
    report = report or LoadReport()
    nodes: list[GpuNode] = []
    seen: set[str] = set()
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        _check_columns(path, reader.fieldnames, NODE_COLUMNS)
        for line, row in enumerate(reader, start=2):
            try:
                gpus = int(row["gpu"])
                cpu, mem = int(row["cpu_milli"]), int(row["memory_mib"])
                name = row["sn"].strip()
                if not name:
                    raise ValueError("empty node name (sn)")
                if name in seen:
                    raise ValueError(f"node {name} appears twice")
                if not 0 <= gpus <= MAX_GPUS or cpu <= 0 or mem <= 0:
                    raise ValueError(f"gpu must be 0..{MAX_GPUS} and cpu_milli, memory_mib positive")
                mig = (row.get("mig_profile") or "").strip()
                if mig:
                    mig = MigProfile.parse(mig).name
            except (ValueError, TypeError, KeyError) as exc:
                report.add(path, line, str(exc))
                continue
            seen.add(name)
            if gpus == 0 and gpu_only:
                continue
            if gpus == 0:
                report.add(path, line, "node without GPUs is not part of the GPU cluster picture")
                continue
            nodes.append(GpuNode(name=name, gpu_count=gpus, gpu_model=(row.get("model") or "unknown").strip(),
                                 cpu_milli=cpu, memory_mib=mem, mig_profile=mig,
                                 gpu_memory_gib=MigProfile.parse(mig).memory_gib if mig else 80.0))
    if not nodes:
        raise ValueError(f"{path}: no usable GPU nodes ({len(report.rejected)} rows rejected)")
    return nodes


def load_pods(path: Path, report: LoadReport | None = None, known_models: set[str] | None = None
              ) -> list[TracePod]:
    report = report or LoadReport()
    pods: list[TracePod] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        _check_columns(path, reader.fieldnames, POD_COLUMNS)
        for line, row in enumerate(reader, start=2):
            try:
                num, milli = int(row["num_gpu"]), int(row["gpu_milli"])
                cpu, mem = int(row["cpu_milli"]), int(row["memory_mib"])
                if not 0 <= num <= MAX_GPUS:
                    raise ValueError(f"num_gpu {num} is outside 0..{MAX_GPUS}")
                if num > 1 and milli != MILLI:
                    raise ValueError(f"multi-GPU task asks for {milli} milli per GPU; only whole GPUs (1000) can span")
                if num >= 1 and not 0 < milli <= MILLI:
                    raise ValueError(f"gpu_milli {milli} must be 1..1000 when num_gpu >= 1")
                if cpu < 0 or mem < 0:
                    raise ValueError("negative cpu_milli or memory_mib")
                models = tuple(m for m in (row.get("gpu_spec") or "").split("|") if m)
                if known_models is not None and models and not set(models) & known_models:
                    raise ValueError(f"gpu_spec {'|'.join(models)} names no GPU model of the cluster")
                whole = num if milli == MILLI else 0
                req = GpuRequest(key=row["name"], whole_gpus=whole, gpu_milli=0 if num == 0 else milli,
                                 cpu_milli=cpu, memory_mib=mem, gpu_models=models)
                created = int(row["creation_time"]) if row.get("creation_time") else None
                deleted = int(row["deletion_time"]) if row.get("deletion_time") else None
            except (ValueError, TypeError, KeyError) as exc:
                report.add(path, line, str(exc))
                continue
            pods.append(TracePod(req, created, deleted))
    return pods
