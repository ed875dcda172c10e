"""Tests here load bench scripts by path; those import bench/_args.py as they do when run, from
their own folder on ``sys.path``."""

import pathlib
import sys

_BENCH = str(pathlib.Path(__file__).resolve().parents[2] / "bench")
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)
