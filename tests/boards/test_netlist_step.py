"""boards.netlist_step: the command line both netlist steps share (outreg, carry_ends), with a
file it cannot read."""

import pytest

from addershift.boards import carry_ends, outreg


@pytest.mark.parametrize("step, name", [(outreg, "outreg"), (carry_ends, "carry_ends")])
@pytest.mark.parametrize("text", ["{", '{"modules": {}}', "[]"])
def test_a_netlist_it_cannot_read_is_named(tmp_path, capsys, step, name, text):
    path = tmp_path / "top.json"
    path.write_text(text)
    assert step.main([str(path)]) == 1
    assert f"{name}: {path}: not a Yosys JSON netlist" in capsys.readouterr().err
    assert path.read_text() == text                      # left as it was
    assert step.main([str(tmp_path / "missing.json")]) == 1
    assert step.main([]) == 2
