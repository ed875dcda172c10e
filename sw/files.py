"""Result files and folders: a write that never costs the file that was there before, and the
check of a folder to write into before any work starts."""

from __future__ import annotations

import contextlib
import os
import pathlib
import stat
import uuid

__all__ = ["write_atomically", "folder_problem"]


def folder_problem(path):
    """Why ``path`` cannot be a folder to create or fill (it is a file, or lies under one), or
    None: checked before the work, which would otherwise fail at its end with an errno text."""
    path = pathlib.Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if existing.is_dir():
                return None
            return ("is a file, not a folder" if existing == path
                    else f"lies under {existing}, a file, not a folder")
    return None


def write_atomically(path, write):
    """Call ``write(f)`` with a binary file that becomes ``path`` only once it is whole.

    The bytes go to a temporary file beside the target (a symlink's target: the link stays),
    which is synced and renamed over it; on any failure the temporary file is removed and the
    earlier file is left as it was (a disk that fills or a file size limit truncated models
    before). A file already there keeps its permissions; a new one gets the usual ones (the
    umask's). A target that exists and is not a regular file (``/dev/null``, a FIFO) is written
    in place: renaming over it would replace the device. Errors name ``path``, not the
    temporary file.
    """
    path = pathlib.Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        with open(path, "wb") as f:
            write(f)
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        f = open(tmp, "xb")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
