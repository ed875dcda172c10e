"""The cycle counts README.md, docs/tutorial.md and docs/boards.md quote for the shipped models
are what the simulator gives today: each is a transcript of ``addershift simulate`` or a number
taken from one, and the hardware's pipeline changes move them by a few cycles (they drifted
unnoticed for a week once). The Amaranth simulator, one image: 10-25 seconds a build."""

import pathlib
import re

import pytest

from addershift.boards.board import get_board
from addershift.sw.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _summary(capsys, *options, kind="adder"):
    """``addershift simulate``'s ``cycles per inference: ...`` line for a shipped model."""
    model = ROOT / "models" / f"digits_{kind}.npz"
    assert main(["simulate", "-m", str(model), "-n", "1", "--simulator", "amaranth",
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


@pytest.mark.parametrize("kind", ["adder", "shift", "mul"])
def test_the_icebreakers_own_builds(capsys, kind):
    line, cycles = _summary(capsys, "--board", "icebreaker", kind=kind)
    # docs/boards.md's table of each board's own build: the kind's row gives its cycles.
    build = get_board("icebreaker").accelerator_build(kind)
    row, = [r for r in (ROOT / "docs" / "boards.md").read_text().splitlines()
            if re.match(rf"\| (`icebreaker`)? *\| {kind} \| {build['rows']}x{build['cols']} \|",
                        r)]
    assert f"; {cycles:,} cycles per inference (`addershift simulate --board icebreaker" in row
    if kind != "mul":
        assert f" {cycles:,} cycles per" in (ROOT / "README.md").read_text()
    if kind == "adder":
        assert line in (ROOT / "docs" / "tutorial.md").read_text()
