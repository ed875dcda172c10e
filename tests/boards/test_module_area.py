"""bench/module_area.py: a whole accelerator synthesised with its components kept apart, counted
per module, the modules adding up to the design."""

import importlib.util
import json
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "module_area.py"
_spec = importlib.util.spec_from_file_location("module_area", _PATH)
module_area = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(module_area)


def test_per_module_counts_add_up_to_the_design(tmp_path, capsys):
    module_area.main(["--family", "ice40", "--rows", "2", "--cols", "2", "--requant-lanes", "1",
                      "--act-banks", "1", "--out", str(tmp_path), "--json"])
    result = json.loads(capsys.readouterr().out)
    modules = result["modules"]
    total = modules.pop("total")
    assert result["build"]["act_banks"] == 1
    # The components each have their own row, the PEs are inside the array's, the shared read
    # stage's step queue is the core's own submodule.
    assert {"top.core", "top.core.array", "top.core.requant", "top.core.steps",
            "top.framer", "top.uart"} <= set(modules)
    assert not any(".pe_" in name for name in modules)
    for kind in ("lut4", "carry", "ff", "bram", "comb"):
        assert sum(row[kind] for row in modules.values()) == total[kind]
    assert modules["top.core.array"]["carry"] > 0 and total["bram"] > 0


def test_only_the_components_are_kept_apart():
    text = "\n".join(f"module \\{n}" for n in (
        "top", "top.core", "top.core.array", "top.core.array.pe_0_0", "top.framer",
        "top.framer.crc", "top.uart"))
    assert module_area.components(text) == ["top.core", "top.core.array", "top.framer",
                                            "top.uart"]


@pytest.mark.parametrize("argv, message", [
    (["--rows", "3", "--act-banks", "2"], "act_banks must divide rows (3), not 2"),
    (["--requant-lanes", "2", "--act-entry-lanes", "1"],
     "act_entry_lanes must be at least the requantiser's lanes (2), not 1"),
    (["--read-pipeline", "short", "--weight-relays", "2"],
     "weight_relays needs the deep read pipeline"),
    (["-m", "no/such/model.npz"], "model file no/such/model.npz: no such file"),
])
def test_bad_build_options_are_one_line_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        module_area.main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())          # nothing was synthesised
