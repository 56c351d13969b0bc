"""Locate the binaries scripts/install-tools.sh puts in .tools/bin (tests fail with the fix if absent)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"


def tool(name: str) -> str | None:
    local = TOOLS / name
    if local.exists():
        return str(local)
    return shutil.which(name)


class Kubectl:
    def __init__(self, binary: str, kubeconfig: Path, cache: Path) -> None:
        self.binary, self.kubeconfig, self.cache = binary, kubeconfig, cache

    def __call__(self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        result = subprocess.run([self.binary, "--cache-dir", str(self.cache), *args], env=env, text=True,
                                capture_output=True, timeout=timeout, input=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result
