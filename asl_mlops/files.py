"""Files written whole or not at all: a crash or a full disk leaves the old file or none, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def give_umask_mode(path: str | Path) -> None:
    """Give a `tempfile.mkstemp` file (mode 0600) the mode a plain open() would (0666 less the umask), so a
    shared cache or data folder stays readable to others."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_write(path: Path, sync: bool = True) -> Iterator[BinaryIO]:
    """A binary file that appears at `path` only once fully written and synced (temp file + rename);
    on any error, or a kill, `path` is untouched and the temp file is removed (or never renamed). `sync=False`
    skips the fsync, for cache entries that are cheap to recompute (a rename still never shows half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        give_umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
