"""asl-mlops: experiment-tracked training, tuning and serving of an ASL letter recognizer."""

__version__ = "0.1.0"
