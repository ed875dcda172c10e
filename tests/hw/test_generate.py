"""``addershift generate`` and ``addershift.hw.generate``: Verilog written, sidecar fields right,
parameter errors reported as one line."""

import json
import pathlib
import re

import pytest

from addershift.hw.generate import build_unit, generate
from addershift.sw.cli import main
from addershift.sw.numerics import acc_width


def verilog_ports(text, module):
    """``{name: (direction, width)}`` of ``module``'s ports, read from Amaranth's Verilog."""
    body = text[text.index(f"module {module}("):]
    body = body[:body.index("endmodule")]
    out = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);",
                                            body, re.M):
        out[name] = (direction, int(msb) + 1 if msb else 1)
    return out


def test_generate_array(tmp_path, capsys):
    out = tmp_path / "adder_4x3.v"
    assert main(["generate", "--pe", "adder", "--rows", "4", "--cols", "3", "-o", str(out)]) == 0
    text = out.read_text()
    info = json.loads(out.with_suffix(".json").read_text())
    assert "module adder_4x3(" in text
    assert info["format"] == "addershift-generate" and info["version"] == 1
    assert (info["unit"], info["top"], info["verilog"]) == ("array", "adder_4x3", "adder_4x3.v")
    assert info["params"] == {"rows": 4, "cols": 3, "kind": "adder", "x_bits": 8, "w_bits": 8,
                              "max_length": 128}
    assert info["derived"] == {"acc_bits": 16, "weight_bits": 8}
    assert info["timing"] == {"latency": 4, "readout_cycles": 4, "idle_after_last": 1}
    # Every port the sidecar names is in the Verilog with that direction and width, and no other.
    declared = verilog_ports(text, "adder_4x3")
    assert {p["name"]: (p["direction"], p["width"]) for p in info["ports"]} == declared
    assert declared["i__payload"] == ("input", 4 * 8 + 3 * 8 + 1)
    assert declared["o__payload"] == ("output", 3 * 16 + 1)
    assert info["payload"]["i"] == [
        {"field": "x", "offset": 0, "width": 8, "count": 4, "signed": True},
        {"field": "w", "offset": 32, "width": 8, "count": 3, "signed": True},
        {"field": "last", "offset": 56, "width": 1, "count": 1, "signed": False}]
    assert info["payload"]["o"][0] == {"field": "acc", "offset": 0, "width": 16, "count": 3,
                                       "signed": True}
    assert "adder_4x3.v" in capsys.readouterr().out


def test_generate_shift_pe_json(tmp_path, capsys):
    out = tmp_path / "pe.v"
    assert main(["generate", "--pe", "shift", "--unit", "pe", "--p-min", "-2", "--p-max", "3",
                 "--max-length", "300", "--top", "shift_pe", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out.with_suffix(".json").read_text()) | {
        "output": str(out), "sidecar": str(out.with_suffix(".json"))}
    assert report["unit"] == "pe" and report["top"] == "shift_pe"
    assert report["params"] == {"kind": "shift", "x_bits": 8, "p_min": -2, "p_max": 3,
                                "max_length": 300}
    assert report["derived"] == {"acc_bits": acc_width("shift", 300, x_bits=8, p_min=-2, p_max=3),
                                 "weight_bits": 5}
    assert report["timing"]["latency"] == 3
    declared = verilog_ports(out.read_text(), "shift_pe")
    assert {p["name"]: (p["direction"], p["width"]) for p in report["ports"]} == declared
    assert set(declared) == {"clk", "rst", "x", "w", "valid", "last", "hold", "acc", "done"}


def test_generate_mul_widths(tmp_path):
    out = tmp_path / "m.v"
    assert main(["generate", "--pe", "mul", "--rows", "2", "--cols", "5", "--x-bits", "6",
                 "--w-bits", "4", "--max-length", "9", "-o", str(out)]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["derived"]["acc_bits"] == acc_width("mul", 9, x_bits=6, w_bits=4)
    assert info["params"]["w_bits"] == 4


def test_generate_accelerator(tmp_path, capsys):
    """The whole top (UART pins, framer, core); with --model, the build that fits the model."""
    from addershift.sw.compiler import default_config
    from addershift.sw.model import load_model
    model = str(pathlib.Path(__file__).resolve().parents[2] / "models" / "digits_shift.npz")
    assert main(["generate", "--unit", "accelerator", "--model", model, "-r", "2", "-c", "3",
                 "-o", str(tmp_path / "acc.v"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    config = default_config(load_model(model), rows=2, cols=3)
    assert info["unit"] == "accelerator" and info["build_hash"] == config.build_hash
    assert info["params"] == config.to_dict()
    assert {p["name"] for p in info["ports"]} == {"clk", "rst", "rx", "tx"}
    assert re.search(r"^module acc\(", (tmp_path / "acc.v").read_text(), re.M)
    assert json.loads((tmp_path / "acc.json").read_text())["build_hash"] == config.build_hash
    assert main(["generate", "--unit", "accelerator", "--pe", "mul", "--baud", "999999999",
                 "-o", str(tmp_path / "bad.v")]) == 1
    assert "baud" in capsys.readouterr().err
    assert not (tmp_path / "bad.v").exists()


def test_memory_depths_from_the_command_line(tmp_path, capsys):
    # The depths given replace the model's (the digits model needs 64 activation words), the
    # others stay; a depth the model does not fit in is refused with the compiler's message.
    model = str(pathlib.Path(__file__).resolve().parents[2] / "models" / "digits_adder.npz")
    assert main(["generate", "--unit", "accelerator", "--model", model, "--act-depth", "128",
                 "--param-depth", "32", "-o", str(tmp_path / "acc.v"), "--json"]) == 0
    params = json.loads(capsys.readouterr().out)["params"]
    assert (params["act_depth"], params["param_depth"], params["weight_depth"]) == (128, 32, 4096)
    assert main(["generate", "--unit", "accelerator", "--model", model, "--act-depth", "32",
                 "-o", str(tmp_path / "small.v")]) == 1
    assert ("needs 64 words per activation bank; this build has 32: rebuild with --act-depth >= 64"
            in capsys.readouterr().err)


@pytest.mark.parametrize("argv,message", [
    (["--rows", "0"], "Array rows must be between 1 and 64, not 0"),
    (["--cols", "99"], "Array cols must be between 1 and 64, not 99"),
    (["--x-bits", "1"], "x_bits must be between 2 and 32, not 1"),
    (["--max-length", "0"], "max_length must be at least 1, not 0"),
    (["--w-bits", "6"],
     "Adder weights share the activations' format: w_bits must equal x_bits (8), not 6"),
    (["--pe", "shift", "--w-bits", "8"],
     "w_bits does not apply to shift PEs (their weights are sign and exponent), not 8"),
    (["--pe", "shift", "--p-min", "4", "--p-max", "2"], "p_max must be at least p_min (4), not 2"),
])
def test_generate_parameter_errors(tmp_path, capsys, argv, message):
    out = tmp_path / "x.v"
    assert main(["generate", "-o", str(out)] + argv) == 1
    assert capsys.readouterr().err.strip() == f"addershift generate: {message}"
    assert not out.exists()


def test_build_unit_checks():
    with pytest.raises(ValueError, match=r"^Unit must be one of pe, array, not 'accelerator'$"):
        build_unit("accelerator", kind="adder")
    with pytest.raises(ValueError, match=r"^A PE has no rows or cols \(got rows=2, cols=None\)$"):
        build_unit("pe", kind="adder", rows=2)


def test_module_name_from_file_name(tmp_path):
    info = generate(build_unit("pe", kind="mul"), tmp_path / "8x8-mul.v")
    assert info["top"] == "top_8x8_mul"
    assert "module top_8x8_mul(" in (tmp_path / "8x8-mul.v").read_text()
    assert [p["name"] for p in info["ports"]][:2] == ["clk", "rst"]
