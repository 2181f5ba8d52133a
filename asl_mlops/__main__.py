"""`python -m asl_mlops` is the `asl-mlops` CLI (what MLproject runs, installed or not)."""

from asl_mlops.cli import main

main()
