"""Where a benchmark result came from: commit, date, machine and command, recorded in every JSON it writes."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa() -> list[str]:
    """The vector instruction sets that decide TensorFlow's kernels (AVX2, AVX-512 parts, AMX)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")
    present = set(flags.split(":", 1)[1].split())
    return [flag for flag in wanted if flag in present]


def provenance() -> dict[str, object]:
    """Commit (with '+dirty' for uncommitted changes), UTC date, machine and the command line."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return {"commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu": cpu_model(), "isa": isa(), "cores": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version()},
            "command": " ".join(["python", *sys.argv])}


def stamped(results: dict[str, object]) -> dict[str, object]:
    """`results` with this run's provenance first. A `machine` the script records itself (load averages, say) is
    kept inside the recorded one; commit, date, command and the machine's cpu, isa and cores are this run's."""
    now = provenance()
    own = results.get("machine")
    machine = {**now["machine"], **{k: v for k, v in own.items() if k not in now["machine"]}} \
        if isinstance(own, dict) else now["machine"]
    return {**now, "machine": machine, **{k: v for k, v in results.items() if k not in now}}


def recorded(results: dict[str, object]) -> dict[str, object] | None:
    """The provenance a results JSON holds: the top-level keys a run wrote (the latest write's, for a file a
    script resumes), else the `provenance` block reconstructed from git history for results written before
    scripts recorded it (its `reconstructed` key says so), else None."""
    if "commit" in results:
        return {k: results.get(k) for k in ("commit", "date", "machine", "command")}
    block = results.get("provenance")
    return block if isinstance(block, dict) else None


def write_results(path: Path, results: dict[str, object], default=None) -> None:
    """Write a benchmark's results as indented JSON (folders made as needed) and say where; scripts pass
    `stamped(results)` or results that start with `provenance()`. `default` is json.dumps's, for other values."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=default) + "\n")
    print(f"wrote {path}")
