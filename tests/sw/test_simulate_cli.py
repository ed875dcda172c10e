"""``addershift simulate`` on the Amaranth simulator: the report, and the exit status and message
when the hardware differs from the golden model."""

import json

from addershift.sw import compiler
from addershift.sw.cli import main
from addershift.sw.layer_cases import layer_case
from addershift.sw.model import save_model


def _model(tmp_path):
    path = tmp_path / "gap.npz"
    save_model(layer_case("gap", "shift", mode="pow2x2"), path)
    return str(path)


def test_simulate_reports_predictions_cycles_and_utilisation(tmp_path, capsys):
    assert main(["simulate", "-m", _model(tmp_path), "--simulator", "amaranth", "-n", "2",
                 "--rows", "2", "--cols", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bit_exact"] and report["mismatch"] is None
    assert report["predictions"] == report["golden_predictions"]
    assert [s["name"] for s in report["stages"]] == ["conv", "fc"]
    assert report["cycles_per_image"][0] == report["cycles_per_image"][1] > 0
    assert report["config"]["rows"] == 2 and report["config"]["pe"] == "shift"
    assert 0 < report["utilisation"] < 1


def test_simulate_names_the_first_layer_that_differs(tmp_path, capsys, monkeypatch):
    real = compiler.compile_model

    def corrupted(model, config, **kw):
        program = real(model, config, **kw)
        c = program.config                        # fc channel 1's bias, its second-highest bit:
        program.param_words[program.stages[1].rq_base + 1 // c.lanes] ^= \
            1 << (1 % c.lanes * c.param_channel_bits + c.bias_bits - 2)
        return program

    monkeypatch.setattr(compiler, "compile_model", corrupted)
    assert main(["simulate", "-m", _model(tmp_path), "--simulator", "amaranth", "-n", "1"]) == 1
    err = capsys.readouterr().err
    assert "addershift simulate: mismatch with the golden model: image 0: layer fc (stage fc) " \
           "differs first at index [" in err


def test_predict_on_a_simulator_builds_under_build_dir(tmp_path, monkeypatch):
    # Not in the working folder's build/sim: --build-dir, as simulate's.
    import numpy as np
    from addershift.sim import accel_sim
    from addershift.sw.model import load_model
    path = _model(tmp_path)
    x = np.zeros((1,) + load_model(path).input_shape, np.int64)
    np.save(tmp_path / "x.npy", x)
    seen = []
    real = accel_sim.simulate_model
    monkeypatch.setattr(accel_sim, "simulate_model",
                        lambda *a, **kw: seen.append(kw["build_dir"]) or real(*a, **kw))
    assert main(["predict", "--backend", "amaranth", "-m", path, "-i", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npy"), "--build-dir", str(tmp_path / "sims")]) == 0
    assert seen == [str(tmp_path / "sims")] and (tmp_path / "y.npy").exists()
