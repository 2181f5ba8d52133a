"""pyproject's dependencies resolve on every common platform, and the gpu extra keeps one TensorFlow;
TensorFlow runs on oneDNN's CPU kernels on every x86-64 CPU.

Resolved with uv's cross-platform resolver (`uv pip compile --python-platform`) against the package
index; skipped where uv or the index cannot be reached."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asl_mlops.tracking import installed_tensorflow, pinned_requirements

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ["x86_64-manylinux_2_28", "aarch64-manylinux_2_28", "aarch64-apple-darwin", "x86_64-pc-windows-msvc"]
TENSORFLOWS = re.compile(r"^(tensorflow(-cpu|-intel|-macos)?)==", re.MULTILINE)


def compile_for(platform: str, *extra: str) -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    done = subprocess.run([uv, "pip", "compile", str(ROOT / "pyproject.toml"), "--python-version", "3.11",
                           "--python-platform", platform, "--no-header", "--quiet", *extra],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and re.search(r"(?i)(connect|network|dns|timed out|failed to fetch)", done.stderr):
        pytest.skip(f"package index unreachable: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("platform", PLATFORMS)
def test_dependencies_resolve_with_one_tensorflow(platform: str):
    resolved = compile_for(platform)
    assert [m.group(1) for m in TENSORFLOWS.finditer(resolved)] == ["tensorflow"]
    assert "tensorflow==2.21.0" in resolved and "nvidia-" not in resolved


@pytest.mark.slow
def test_gpu_extra_adds_cuda_to_the_same_tensorflow():
    resolved = compile_for("x86_64-manylinux_2_28", "--extra", "gpu")
    assert [m.group(1) for m in TENSORFLOWS.finditer(resolved)] == ["tensorflow"]
    assert "nvidia-cudnn-cu12==" in resolved and "nvidia-cublas-cu12==" in resolved


def test_logged_models_name_the_tensorflow_that_is_installed():
    from importlib import metadata

    name = installed_tensorflow()
    assert pinned_requirements(("tensorflow", "keras")) == [f"{name}=={metadata.version(name)}",
                                                             f"keras=={metadata.version('keras')}"]


@pytest.mark.slow
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="set on x86-64 CPUs only")
@pytest.mark.parametrize(("setting", "on"), [(None, True), ("0", False), ("1", True)])
def test_importing_asl_mlops_turns_on_onednn_unless_the_environment_says_otherwise(setting: str | None, on: bool):
    # TensorFlow alone leaves oneDNN off on some x86-64 CPUs, e.g. AVX2-only ones (asl_mlops/__init__.py).
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    code = ("import os, asl_mlops, tensorflow\n"
            "from tensorflow.python.util import _pywrap_util_port  # no public call says it\n"
            "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], _pywrap_util_port.IsMklEnabled())")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [setting or "1", str(on)]
