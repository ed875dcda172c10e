"""The differential fuzzer (``sim/fuzz.py``): random networks on random builds match the golden
model in Amaranth and on Icarus (a few seeds here, hundreds with ``slow``), and a difference is
reported."""

import numpy as np
import pytest

from addershift.boards.board import get_board
from addershift.sim import fuzz
from addershift.sw import golden


def _outcomes(seeds, simulator, tmp_path, board=None):
    device = get_board(board).device if board else None
    seeds = list(seeds)
    cases = [fuzz.run_case(seed, simulator=simulator, device=device, build_dir=tmp_path,
                           keep_build=seed == seeds[0]) for seed in seeds]
    assert [str(c) for c in cases if c.outcome == "mismatch"] == []
    # Refusals are the compiler's, naming a build parameter; most cases run.
    assert all("rebuild with" in c.message for c in cases if c.outcome == "refused")
    assert sum(c.outcome == "ok" for c in cases) >= 0.8 * len(cases)
    if simulator != "amaranth":
        # The first seed's Verilog build is kept as asked; the others matched: removed.
        kept = {str(seeds[0])} if cases[0].outcome == "ok" else set()
        assert {p.name for p in tmp_path.iterdir()} == kept
        assert all(any(p.iterdir()) for p in tmp_path.iterdir())
    return cases


@pytest.mark.parametrize("simulator, seeds, board", [
    ("amaranth", range(8), None), ("icarus", range(2), None),
    # As the boards build them: the iCE40UP's SPRAM weight memory, an ECP5 adder's carry cells.
    ("icarus", [4], "icebreaker"), ("icarus", [3], "ulx3s-85f")])
def test_random_networks_on_random_builds_match_the_golden_model(simulator, seeds, board,
                                                                 tmp_path):
    _outcomes(seeds, simulator, tmp_path, board)


@pytest.mark.slow
@pytest.mark.parametrize("simulator, seeds, board", [
    ("amaranth", range(8, 208), None), ("icarus", range(2, 22), None),
    ("icarus", range(5, 15), "icebreaker"), ("icarus", range(5, 15), "ulx3s-85f"),
    ("verilator", range(3), None)])
def test_many_random_networks_match_the_golden_model(simulator, seeds, board, tmp_path):
    _outcomes(seeds, simulator, tmp_path, board)


def test_the_draws_cover_the_builds_options():
    # Over the default suite's seeds and a few more: every PE kind, and each build option drawn.
    seen = set()
    for seed in range(40):
        rng = np.random.default_rng([seed, 0x5eed])
        model, _ = fuzz.random_network(rng)
        try:
            config = fuzz.random_build(rng, model)
        except fuzz.CompileError:
            continue
        seen |= {config.pe.value, config.requant_mode.value, f"x{config.x_bits}",
                 *(name for name in ("requant_lanes", "act_banks", "act_entry_lanes",
                                     "weight_relays") if getattr(config, name) is not None),
                 *(f"{name}={getattr(config, name)}" for name in
                   ("requant_pipeline", "writeback_pipeline", "read_pipeline"))}
    assert {"adder", "shift", "mul", "pow2x2", "x4", "x6", "x8", "requant_lanes",
            "act_banks", "act_entry_lanes", "weight_relays", "read_pipeline=short",
            "read_pipeline=deep", "writeback_pipeline=short",
            "writeback_pipeline=deep"} <= seen


def test_a_difference_from_the_golden_model_is_reported(monkeypatch, tmp_path, capsys):
    # The golden trace off by one at the last layer: the case and the command line say so.
    trace = golden.trace

    def off_by_one(model, x):
        out = trace(model, x)
        out[-1] = out[-1] + 1
        return out

    monkeypatch.setattr(golden, "trace", off_by_one)
    case = fuzz.run_case(0, build_dir=tmp_path)
    assert case.outcome == "mismatch"
    assert case.message.startswith("image 0: layer ") and " differs first at index " in case.message
    assert fuzz.main(["--seeds", "0", "--build-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("seed 0: mismatch [pe=") and out.endswith(
        "0 ok, 0 refused, 1 mismatch, 0 error\n")


def test_a_failing_simulation_is_reported_and_the_campaign_goes_on(monkeypatch, capsys):
    # A hung or broken simulation is that seed's error; the next seed still runs.
    def hang(jobs, **kwargs):
        raise TimeoutError("the simulated board stopped answering")

    monkeypatch.setattr(fuzz, "simulate_batch", hang)
    assert fuzz.main(["--seeds", "0:2"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("seed 0: error [pe=")
    assert lines[1] == "    TimeoutError: the simulated board stopped answering"
    assert lines[2].startswith("seed 1: ") and lines[-1] == "0 ok, 0 refused, 0 mismatch, 2 error"


def test_a_board_needs_a_verilog_simulator(capsys):
    with pytest.raises(SystemExit):
        fuzz.main(["--seeds", "0", "--board", "icebreaker"])
    assert "--board needs --simulator icarus or verilator" in capsys.readouterr().err


def test_seeds_argument():
    assert fuzz._seeds("3") == range(3, 4) and fuzz._seeds("2:5") == range(2, 5)
    for bad in ("x", "5:2", "1:y"):
        with pytest.raises(Exception, match="seeds"):
            fuzz._seeds(bad)
