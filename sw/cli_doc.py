"""Write ``docs/cli.md``, the CLI reference, from the argument parser itself.

    .venv/bin/python -m addershift.sw.cli_doc docs/cli.md

``tests/sw/test_cli.py`` checks that the committed file equals what this writes, so the reference
cannot drift from ``--help``.
"""

from __future__ import annotations

import os
import sys

from .cli import build_parser

__all__ = ["cli_reference"]


def cli_reference():
    os.environ["COLUMNS"] = "100"      # argparse wraps to the terminal: fix it for a stable file
    parser = build_parser()
    parts = ["# `addershift` command reference", "",
             "Generated from the argument parser by `python -m addershift.sw.cli_doc docs/cli.md`; "
             "do not edit by hand.", "", "```", parser.format_help().rstrip(), "```"]
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        parts += ["", f"## `addershift {name}`", "", "```", p.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    text = cli_reference()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
