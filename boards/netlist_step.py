"""What the steps that rewrite Yosys' JSON netlist before nextpnr reads it share (:mod:`.outreg`,
:mod:`.carry_ends`): finding the top module, the command line, and the platform whose build runs
them. The steps run as scripts in a build folder, by their paths (so the build needs no package
on the path), so this module and they use the standard library only.
"""

from __future__ import annotations

import json
import pathlib
import sys

__all__ = ["top_module", "rewrite_file", "run", "with_netlist_step"]


def top_module(netlist):
    """The top module of a Yosys JSON netlist (a dict); ``ValueError`` names what is wrong."""
    modules = netlist.get("modules") if isinstance(netlist, dict) else None
    if not isinstance(modules, dict):
        raise ValueError("a Yosys netlist is an object with a 'modules' object")
    tops = [m for m in modules.values() if m.get("attributes", {}).get("top")]
    if len(tops) != 1:
        raise ValueError(f"a Yosys netlist has one top module, this one {len(tops)}")
    return tops[0]


def rewrite_file(path, rewrite):
    """Apply ``rewrite`` (a function of the netlist dict, which it changes in place) to the Yosys
    JSON netlist at ``path``; returns what ``rewrite`` returns. The file is left as it was when
    ``rewrite`` raises."""
    path = pathlib.Path(path)
    netlist = json.loads(path.read_text())
    result = rewrite(netlist)
    path.write_text(json.dumps(netlist))
    return result


def run(argv, name, rewrite, log_lines):
    """The command line ``python STEP.py NETLIST.json`` of step ``name``: rewrites the file with
    ``rewrite`` and prints ``log_lines(result)``; returns the exit status (2: usage, 1: a file
    it cannot read, named on stderr)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m addershift.boards.{name} NETLIST.json", file=sys.stderr)
        return 2
    try:
        result = rewrite_file(args[0], rewrite)
    except (OSError, ValueError, KeyError) as e:      # json.JSONDecodeError is a ValueError
        print(f"{name}: {args[0]}: not a Yosys JSON netlist it can read: {e!r}", file=sys.stderr)
        return 1
    for line in log_lines(result):
        print(line)
    return 0


def with_netlist_step(platform_class, script, label):
    """A subclass of ``platform_class`` (an Amaranth platform) whose build runs ``script`` (a
    step: a Python file whose command line is :func:`run`'s) between Yosys and the
    place-and-route tool; ``label`` prefixes the class name. The command names this Python and
    the script by their paths, so the build folder's script needs no package on the path (but
    is tied to this installation)."""
    command = f'"{sys.executable}" "{pathlib.Path(script).resolve()}" ' + "{{name}}.json"

    class StepPlatform(platform_class):
        @property
        def command_templates(self):
            yosys, *rest = super().command_templates
            return [yosys, command, *rest]

    StepPlatform.__name__ = StepPlatform.__qualname__ = f"{label}{platform_class.__name__}"
    return StepPlatform
