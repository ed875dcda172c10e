"""The cycle counts README.md and docs/tutorial.md quote for the shipped adder model are what the
simulator gives today: each is a transcript of ``addershift simulate`` or a number taken from
one, and the hardware's pipeline changes move them by a few cycles (they drifted unnoticed for a
week once). The Amaranth simulator, one image: about 15 seconds a build."""

import pathlib
import re

import pytest

from addershift.sw.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "digits_adder.npz"


def _summary(capsys, *options):
    """``addershift simulate``'s ``cycles per inference: ...`` line for the shipped adder model."""
    assert main(["simulate", "-m", str(MODEL), "-n", "1", "--simulator", "amaranth",
                 *options]) == 0
    line, = [x for x in capsys.readouterr().out.splitlines()
             if x.startswith("cycles per inference: ")]
    return line, int(line.split()[3])


def _table_cycles(readme, shape):
    """The ULX3S table's cycles and images per second at 100 MHz for ``shape``."""
    row, = re.findall(rf"^\| {shape} [^\n]*\| ([\d,]+) \| ([\d,]+) \|$", readme, re.M)
    return tuple(int(v.replace(",", "")) for v in row)


@pytest.mark.parametrize("shape, options", [
    ("4x4", ["--rows", "4", "--cols", "4"]),
    ("8x8 (the board's own build)", []),
])
def test_the_ulx3s_table_and_the_tutorial(capsys, shape, options):
    line, cycles = _summary(capsys, "--board", "ulx3s-85f", *options)
    assert _table_cycles((ROOT / "README.md").read_text(), re.escape(shape)) == \
        (cycles, round(100e6 / cycles, -2))
    if options:       # the tutorial's 4x4: its model has the shipped one's build
        assert line in (ROOT / "docs" / "tutorial.md").read_text()


def test_the_icebreakers_own_build(capsys):
    line, cycles = _summary(capsys, "--board", "icebreaker")
    assert line in (ROOT / "docs" / "tutorial.md").read_text()
    assert f" {cycles:,} cycles per inference" in (ROOT / "README.md").read_text()
