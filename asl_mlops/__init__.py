"""asl-mlops: experiment-tracked training, tuning and serving of an ASL letter recognizer."""

import os
import platform

# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX
# (DefaultOneDnnPolicy, tensorflow/core/util/port.cc). On other x86-64 CPUs, e.g. AVX2-only ones, convolutions
# and their gradients run on Eigen, which made a default training step 1.5x slower (benchmarks/train.py
# --only onednn). TensorFlow reads the variable once, when it is imported, so it is set here, before any module
# imports it; TF_ENABLE_ONEDNN_OPTS=0 in the environment keeps Eigen. Other CPUs keep TensorFlow's choice.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
