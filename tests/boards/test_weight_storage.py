"""bench/weight_storage.py: the weights' bits by PE kind, the program's weight words and the
memories' blocks, counted from the model file, the compiled program and Yosys."""

import importlib.util
import math
import pathlib

import numpy as np
import pytest

from addershift.hw.config import ArrayConfig
from addershift.sw.compiler import default_config, descriptor_slot_words
from addershift.sw.model import load_model

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("weight_storage",
                                               _ROOT / "bench" / "weight_storage.py")
weight_storage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(weight_storage)


def _model(kind):
    return _ROOT / "models" / f"digits_{kind}.npz"


def _file_weights(kind):
    """Each compute layer's (out channels, weights), read from the npz arrays themselves."""
    name = "sign" if kind == "shift" else "weight"
    with np.load(_model(kind)) as arrays:
        return [(arrays[k].shape[0], arrays[k].size) for k in arrays.files
                if k.endswith(f".{name}")]


@pytest.mark.parametrize("kind", ["adder", "shift", "mul"])
@pytest.mark.parametrize("cols", [2, 3, 4])
def test_weights_words_and_padding(kind, cols):
    model = load_model(_model(kind))
    config = default_config(model, rows=2, cols=cols)
    s = weight_storage.storage(model, config)
    layers = _file_weights(kind)
    assert s["weights"] == sum(n for _, n in layers) == 1864
    if kind == "shift":       # sign (2 bits: +1, 0, -1) and the exponent above the layer's least
        span = max(layer.p_max - layer.p_min for layer in model.compute_layers())
        assert s["bits_per_weight"] == 2 + max(1, span.bit_length()) == 5
    else:
        assert s["bits_per_weight"] == model.x_bits == 8
    assert s["weight_bits"] == s["weights"] * s["bits_per_weight"]
    # A word per output-channel group and reduction step; a channel group's unused lanes pad.
    assert s["weight_words"] == sum(math.ceil(out / cols) * (n // out) for out, n in layers)
    assert s["word_bits"] == cols * s["bits_per_weight"]
    assert s["descriptor_words"] == 3 * descriptor_slot_words(config)
    padded = s["program_weight_bits"] - s["weight_bits"]
    assert padded == 0 if cols == 2 else padded > 0      # 8, 16 and 10 channels
    assert s["weight_memory_bits"] == config.weight_depth * s["word_bits"]
    assert s["channels"] == 8 + 16 + 10
    assert s["param_bits"] == 34 * config.param_channel_bits


def test_a_board_build_is_the_one_addershift_build_makes():
    model = load_model(_model("shift"))
    config = weight_storage.board_config(model, "icebreaker")
    assert isinstance(config, ArrayConfig)
    assert (config.rows, config.cols, config.weight_depth) == (4, 3, 1024)


def test_the_memories_blocks_come_from_the_synthesis(tmp_path):
    # A 2x2 adder build's weight words are 16 bits: one SB_SPRAM256KA (16 bits wide) holds them.
    model = load_model(_model("adder"))
    config = default_config(model, rows=2, cols=2, requant_lanes=1, act_depth=128)
    blocks = weight_storage.on_chip(config, "ice40", tmp_path)
    assert blocks["weights"] == {"spram": 1, "bram": 0}
    # 256 parameter words of 31 bits: four SB_RAM40_4K as the pinned Yosys maps them (the two
    # activation buffers take three each, the performance counters two).
    assert config.param_depth * config.param_channel_bits == 256 * 31
    assert blocks["params"] == {"spram": 0, "bram": 4}


def test_tables():
    rows = [{"model": "m.npz", "board": "icebreaker", "shape": "4x3", "weights": 1864,
             "bits_per_weight": 5, "weight_bits": 9320, "weight_words": 715, "word_bits": 15,
             "program_weight_bits": 10725, "weight_memory_bits": 15360, "channels": 34,
             "bits_per_channel": 34, "on_chip": {"weights": {"spram": 1, "bram": 0},
                                                 "params": {"spram": 0, "bram": 3}}}]
    assert weight_storage.storage_table(rows).splitlines()[2] == (
        "| m.npz | icebreaker (4x3) | 1,864 | 5 | 1.14 | 715 x 15 = 1.31 | 87% | 1.88 | 34 (34) "
        "| 1 SPRAM | 3 BRAM |")
    acc = [{"pe": "shift", "x_bits": 8, "shift_bits": 2, "float": 0.98, "int": 0.9,
            "bits_per_weight": 4, "weights": 1864, "weight_bits": 7456}]
    assert weight_storage.train_table(acc).splitlines()[2] == \
        "| shift | 8 | 4 | 4 | 0.91 | 98.00% | 90.00% |"


def test_a_model_no_build_takes_is_one_line_before_any_synthesis(monkeypatch, capsys, tmp_path):
    def refuse(model, board):
        raise weight_storage.CompileError("layer conv2 needs 18 KiB of weight memory")
    monkeypatch.setattr(weight_storage, "board_config", refuse)
    monkeypatch.setattr(weight_storage, "on_chip", lambda *a: pytest.fail("synthesised"))
    with pytest.raises(SystemExit) as exit_info:
        weight_storage.main(["--out", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        ": error: layer conv2 needs 18 KiB of weight memory")


@pytest.mark.slow
def test_accuracy_against_bits_per_weight():
    # Three float networks trained, each quantised at every width (about 35 s).
    rows = weight_storage.train_rows(lambda msg: None)
    widths = [(r["pe"], r.get("shift_bits", r["x_bits"])) for r in rows]
    assert widths == [("adder", b) for b in weight_storage.X_BITS] + \
        [("shift", b) for b in weight_storage.SHIFT_BITS] + \
        [("mul", b) for b in weight_storage.X_BITS]
    for r in rows:
        # A shift weight: its sign (2 bits) and an exponent of shift_bits bits; adder and mul
        # weights in the activations' format.
        want = 2 + r["shift_bits"] if r["pe"] == "shift" else r["x_bits"]
        assert r["bits_per_weight"] == want and r["weight_bits"] == 1864 * want
        if r["pe"] == "shift":                  # its activations stay 8 bits
            assert r["x_bits"] == 8
        assert 0.9 <= r["int"] <= 1 and 0.9 <= r["float"] <= 1


def test_a_model_with_nothing_for_the_array_is_the_compilers_error():
    from addershift.sw.model import QModel, ReLU
    with pytest.raises(weight_storage.CompileError, match="no conv2d or linear layer"):
        weight_storage.board_config(QModel(input_shape=(1, 8, 8), layers=[ReLU("relu")]),
                                    "icebreaker")
