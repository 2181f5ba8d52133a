"""asl-mlops: experiment-tracked training, tuning and serving of an ASL letter recognizer."""

import os
import platform

# The one thing done at import, because it must come before TensorFlow loads: TensorFlow turns its oneDNN kernels
# on by itself only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX (DefaultOneDnnPolicy,
# tensorflow/core/util/port.cc). On other x86-64 CPUs, e.g. AVX2-only ones, convolutions and their gradients run
# on Eigen: there a default training step took 1.23x as long, and a default run 1.46x (benchmarks/train.py
# --only onednn, --only cnn --only cnn-eigen). TensorFlow reads the variable once, when it is imported, so a
# process that imports TensorFlow before asl_mlops keeps TensorFlow's choice; so does TF_ENABLE_ONEDNN_OPTS=0 in
# the environment, and so do other CPUs. Evaluation and serving in a process that imports asl_mlops first run on
# oneDNN too.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
