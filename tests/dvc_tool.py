"""Locating and running DVC, which lives in its own tool venv (.venv-dvc: its antlr pin clashes with Dagster's)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dvc_executable() -> str:
    """``<repo>/.venv-dvc/bin/dvc``, else ``dvc`` on PATH, else a clear error."""
    local = REPO / ".venv-dvc" / "bin" / "dvc"
    if local.exists():
        return str(local)
    found = shutil.which("dvc")
    if found:
        return found
    raise RuntimeError("DVC not found: run `bash scripts/setup.sh` (it creates .venv-dvc/) "
                       "or put a dvc 3.x executable on PATH")


def dvc_env() -> dict[str, str]:
    """The environment for DVC and the `flame` commands it runs: the project venv first on PATH."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", DAGSTER_DISABLE_TELEMETRY="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_dvc(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([dvc_executable(), *args], cwd=cwd, env=dvc_env(), text=True,
                          capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc
