"""Import TensorFlow without the lines its wheel prints to stderr on machines without a GPU.

Used by the CLI before it trains or loads a model, by `asl-mlops evaluate` after its cheap checks, and by
each `asl-mlops serve` worker.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Run the block with the process's stderr (fd 2) sent to /dev/null: for native libraries that log through
    their own C++ loggers at start-up (TensorFlow, MediaPipe), which Python's logging settings cannot reach.
    Python exceptions still propagate, and are shown once stderr is back."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow, and let it look for devices, with the process's stderr (fd 2) closed off. The
    `tensorflow` wheel logs "Could not find cuda drivers" through absl before its logging is set up, so
    TF_CPP_MIN_LOG_LEVEL cannot hide it, and "failed call to cuInit" at its first device lookup, on every machine
    without a GPU. An import error still raises, and is shown, after stderr is back; the run's `device` tag says
    which device trained."""
    if "tensorflow" in sys.modules:
        return
    with quiet_stderr():
        import tensorflow

        tensorflow.config.list_physical_devices("GPU")  # the CUDA lookup, done once per process
