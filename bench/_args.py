"""Argument types the bench scripts share (``type=`` of ``add_argument``).

Each rejects a bad value while the arguments are parsed, so argparse prints one line that names
the option and the value and exits with status 2, instead of a traceback (or a run that never
ends) once the work has started.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib

from addershift.sw.cli import seed_list
from addershift.sw.files import folder_problem

__all__ = ["int_range", "positive_int", "nonnegative_int", "positive_float", "shape", "comma_list",
           "one_of", "out_dir", "NEXTPNR_SEED", "nextpnr_seeds"]

#: The array's limits on rows and cols (``hw.config.ArrayConfig``).
MAX_SIDE = 64


def int_range(lo, hi=None):
    """A type: an integer of at least ``lo`` (and at most ``hi``, when given)."""
    what = f"of at least {lo}" if hi is None else f"from {lo} to {hi}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be an integer {what}, not {text!r}")
        return value

    parse.__name__ = f"integer {what}"
    return parse


positive_int = int_range(1)
nonnegative_int = int_range(0)
#: nextpnr's ``--seed`` is a 32-bit int (``boards.build`` checks the same).
NEXTPNR_SEED = int_range(-2**31, 2**31 - 1)


def positive_float(text):
    """A finite number greater than 0 (a clock in MHz): not nan, inf, 0 or negative."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, not {text!r}")
    return value


def nextpnr_seeds(text):
    """``--seed`` of a board build: one nextpnr seed or a list of distinct ones (``sw.cli``'s
    :func:`seed_list`), each a 32-bit int."""
    seeds = seed_list(text)
    for seed in seeds:
        NEXTPNR_SEED(seed)
    return seeds


def shape(text):
    """``"RxC"`` as ``(rows, cols)``, each 1 .. 64 (the array's limits)."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is ROWSxCOLS, e.g. 16x32, not {text!r}") \
            from None
    if not (1 <= rows <= MAX_SIDE and 1 <= cols <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"rows and cols must be between 1 and {MAX_SIDE}, not "
                                         f"{text!r}")
    return rows, cols


def one_of(choices):
    """A type: one of ``choices`` (for items of a :func:`comma_list`; else use ``choices=``)."""
    def parse(text):
        if text not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)}, not {text!r}")
        return text
    return parse


def comma_list(item, *, count=None):
    """A type: a comma-separated list of ``item`` values (``count`` of them, when given), as a
    tuple; the message names the whole list and the bad item."""
    def parse(text):
        parts = text.split(",")
        if count is not None and len(parts) != count:
            raise argparse.ArgumentTypeError(f"takes {count} comma-separated values, not {text!r}")
        try:
            return tuple(item(part.strip()) for part in parts)
        except argparse.ArgumentTypeError as e:
            if len(parts) == 1:
                raise
            raise argparse.ArgumentTypeError(f"{e} (in {text!r})") from None
    return parse


def out_dir(text):
    """A folder to write into, as a ``pathlib.Path``: a folder or a path that can be made one
    (the nearest existing ancestor is a folder this user can write in)."""
    path = pathlib.Path(text)
    problem = folder_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(f"{text} {problem}")
    existing = next(p for p in (path, *path.parents) if p.exists() or p == pathlib.Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {existing} (for {text!r})")
    return path
