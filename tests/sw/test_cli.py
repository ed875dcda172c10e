"""The console script: help, the golden predict path, and honest refusals."""

import subprocess
import sys

import numpy as np
import pytest

from addershift.sw.cli import build_parser, main
from addershift.sw.examples import digits_net
from addershift.sw.golden import predict, trace
from addershift.sw.model import save_model

SUBCOMMANDS = ["generate", "train", "quantize", "import", "predict", "simulate", "build", "program",
               "serve-sim", "run", "demo"]


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "addershift.sw.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in SUBCOMMANDS:
        assert name in out
    for name in SUBCOMMANDS:   # and each has its own --help
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([name, "--help"])
        assert e.value.code == 0


def test_predict_golden_with_trace(tmp_path, capsys):
    model = digits_net("adder", mode="pow2x2")
    save_model(model, tmp_path / "m.npz")
    x = np.random.default_rng(0).integers(0, 128, (6, 1, 8, 8))
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", "-m", str(tmp_path / "m.npz"), "-i", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npy"), "--trace", str(tmp_path / "trace"), "--json"]) == 0
    assert '"images": 6' in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), predict(model, x))
    files = sorted((tmp_path / "trace").iterdir())
    assert [f.name for f in files][:2] == ["00_conv1.npy", "01_relu1.npy"]
    np.testing.assert_array_equal(np.load(files[3]), trace(model, x)[3])


def test_bad_model_file_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"nope")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), dtype=np.int64))
    assert main(["predict", "-m", str(tmp_path / "bad.npz"), "-i", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npy")]) == 1
    err = capsys.readouterr().err
    assert "not a readable .npz archive" in err and "Traceback" not in err


def test_wrong_input_shape_is_one_line(tmp_path, capsys):
    save_model(digits_net("mul"), tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), dtype=np.int64))
    assert main(["predict", "-m", str(tmp_path / "m.npz"), "-i", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npy")]) == 1
    assert "Inputs must have shape (N, 1, 8, 8), not (1, 8, 8)" in capsys.readouterr().err


def test_cli_reference_is_current():
    """docs/cli.md is generated from the parser: regenerate it when a subcommand changes."""
    import pathlib
    from addershift.sw.cli_doc import cli_reference
    path = pathlib.Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    assert path.read_text() == cli_reference(), \
        "docs/cli.md is stale: run .venv/bin/python -m addershift.sw.cli_doc docs/cli.md"


def test_generate_takes_the_weight_relays(tmp_path, capsys):
    # The option reaches the build: its Verilog has the relay registers, and a bad value is
    # one line naming the option before anything is written.
    out = tmp_path / "top.v"
    assert main(["generate", "--pe", "adder", "--rows", "2", "--cols", "4", "--weight-relays",
                 "2", "--unit", "accelerator", "-o", str(out)]) == 0
    assert "addr_relay_replica1" in out.read_text()
    assert main(["generate", "--pe", "adder", "--rows", "2", "--cols", "4", "--weight-relays",
                 "3", "--unit", "accelerator", "-o", str(tmp_path / "bad.v")]) == 1
    err = capsys.readouterr().err
    assert "--weight-relays must divide cols (4), not 3" in err and "Traceback" not in err
    assert not (tmp_path / "bad.v").exists()


def test_requant_mode_defaults_to_the_shipped_models(monkeypatch, tmp_path):
    # pow2x2 for adder and shift, mul for mul: a `--pe mul` build takes models/digits_mul.npz,
    # and `build`, `serve-sim` and `generate --unit accelerator` choose alike; a model decides.
    import pathlib
    from addershift.sw import cli
    from addershift.sw.compiler import compile_model
    from addershift.sw.model import load_model
    models = pathlib.Path(__file__).resolve().parents[2] / "models"

    def config(*argv):
        args = build_parser().parse_args(list(argv))
        cli._resolve_build(args)
        return cli._sim_build(args)
    for pe, mode in [("adder", "pow2x2"), ("shift", "pow2x2"), ("mul", "mul")]:
        assert config("build", "--pe", pe).requant_mode.value == mode
        assert config("serve-sim", "--pe", pe).requant_mode.value == mode
    assert config("build", "--pe", "mul", "--requant-mode", "shift").requant_mode.value == "shift"
    assert config("build", "-m", str(models / "digits_adder.npz"),
                  "--requant-mode", "mul").requant_mode.value == "pow2x2"
    compile_model(load_model(models / "digits_mul.npz"), config("build", "--pe", "mul"))
    seen = []

    def top(config, **kwargs):
        seen.append(config)
        raise ValueError("not generated in this test")
    monkeypatch.setattr("addershift.hw.accelerator.AcceleratorTop", top)
    assert main(["generate", "--unit", "accelerator", "--pe", "mul",
                 "-o", str(tmp_path / "a.v")]) == 1
    assert seen[0].build_hash == config("serve-sim", "--pe", "mul").build_hash
