"""The compiler: layouts checked by running programs on the accelerator model against the golden
trace, the program file round trip, and every "does not fit" message."""

import pathlib

import numpy as np
import pytest

from addershift.hw.config import ArrayConfig
from addershift.sw.accel_model import AcceleratorModel, ProgramError
from addershift.sw.compiler import (BIAS_HEADROOM, CompileError, Program, compile_model,
                                    compiled_biases, default_config, descriptor_fields,
                                    pack_fields, unpack_fields)
from addershift.sw.examples import digits_net
from addershift.sw.golden import trace
from addershift.sw.layer_cases import CASES, layer_case
from addershift.sw.model import GlobalAvgPool, MaxPool2d, QModel, ReLU, Requant, load_model
from addershift.sw.numerics import SHIFT_MAX, int_range, requantize

OPS = ("adder", "shift", "mul")
MODES = ("shift", "pow2x2", "mul")


def _check_stages(model, config, images=2, seed=1):
    """Every stage's output on the model of the hardware equals the golden trace entry."""
    program = compile_model(model, config)
    acc = AcceleratorModel(program)
    x = np.random.default_rng(seed).integers(0, 128, (images,) + tuple(model.input_shape))
    expected = trace(model, x)
    for n in range(images):
        acc.write_input(x[n])
        for s, stage in enumerate(program.stages):
            acc.run(start=s, count=1)
            np.testing.assert_array_equal(acc.read_output(s), expected[stage.trace_index][n],
                                          err_msg=f"stage {stage.name}")
    return program


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("op", OPS)
def test_layer_cases_on_the_model(case, op):
    for mode, (rows, cols) in zip(MODES, [(4, 4), (3, 2), (2, 5)]):
        config = ArrayConfig(pe=op, rows=rows, cols=cols, requant_mode=mode, max_k=128)
        _check_stages(layer_case(case, op, mode=mode), config)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", [(4, 4), (8, 8)])
def test_digits_net_on_the_model(op, shape):
    config = ArrayConfig(pe=op, rows=shape[0], cols=shape[1], max_k=128)
    program = _check_stages(digits_net(op), config, images=3)
    assert [s.layers for s in program.stages] == [
        ("conv1", "relu1", "pool1"), ("conv2", "relu2", "pool2", "flatten"), ("fc",)]
    assert program.busy_pe_cycles == 64 * 8 * 9 + 16 * 16 * 72 + 10 * 64


def test_whole_run_stops_at_the_last_descriptor():
    model = digits_net("mul")
    program = compile_model(model, ArrayConfig(pe="mul", rows=4, cols=4, max_k=128))
    acc = AcceleratorModel(program)
    x = np.random.default_rng(3).integers(0, 128, (1, 1, 8, 8))
    acc.write_input(x[0])
    assert acc.run() == 3
    np.testing.assert_array_equal(acc.read_output(), trace(model, x)[-1][0])
    with pytest.raises(ProgramError, match="stage 3: no descriptor"):
        acc.run(start=3)


def test_program_file_round_trip():
    program = compile_model(digits_net("shift", mode="pow2x2"),
                            ArrayConfig(pe="shift", rows=4, cols=4, requant_mode="pow2x2"))
    again = Program.from_bytes(program.to_bytes())
    assert again.images() == program.images()
    assert again.stages == program.stages and again.config == program.config
    assert again.descriptor(1) == program.stages[1].fields
    with pytest.raises(ValueError, match="not a program file"):
        Program.from_bytes(b"nope" + program.to_bytes()[4:])


def test_descriptor_packing_round_trip():
    config = ArrayConfig(pe="adder", rows=4, cols=4)
    fields = descriptor_fields(config)
    values = {name: (-1 if signed else (1 << bits) - 1) for name, bits, signed in fields}
    assert unpack_fields(fields, pack_fields(fields, values)) == values
    with pytest.raises(ValueError, match="Descriptor field magic = 256 does not fit 8 bits"):
        pack_fields(fields, {**values, "magic": 256})


def test_input_image_layout():
    program = compile_model(layer_case("conv_s1_p1", "mul"),
                            ArrayConfig(pe="mul", rows=2, cols=2, max_k=128))
    x = np.arange(3 * 5 * 5).reshape(3, 5, 5) - 30
    data = program.input_image(x)
    # Word (cg, h, w) holds channels 2cg, 2cg+1 of pixel (h, w); the padding lane is 0.
    assert len(data) == 2 * 25 * 2
    assert data[0:2] == bytes([x[0, 0, 0] & 0xFF, x[1, 0, 0] & 0xFF])
    assert data[50 + 2 * 7:50 + 2 * 7 + 2] == bytes([x[2, 1, 2] & 0xFF, 0])
    with pytest.raises(ValueError, match=r"Input must have shape \(3, 5, 5\), not \(5, 5\)"):
        program.input_image(x[0])


# --- does not fit -------------------------------------------------------------------------------

def _config(**kw):
    base = dict(pe="adder", rows=4, cols=4, max_k=128)
    return ArrayConfig(**{**base, **kw})


def test_weight_memory_too_small():
    # The depth named holds the whole program: the classifier after conv2 too, and the
    # descriptors' weight addresses as wide as that depth needs (4,668 words held conv2 only).
    model = digits_net("adder", channels=(16, 128))
    with pytest.raises(CompileError) as e:
        compile_model(model, _config(max_k=1024, weight_depth=4096))
    assert str(e.value) == (
        "layer conv2 needs 18 KiB of weight memory (the program up to it 18.2 KiB); this build "
        "has 16 KiB: rebuild with a larger weight memory (weight_depth >= 6204 words, the whole "
        "program) or use a smaller model")
    assert e.value.need == {"weight_depth": 6204}
    assert len(compile_model(model, _config(max_k=1024, weight_depth=6204)).weight_words) == 6204
    with pytest.raises(CompileError, match=r"\(weight_depth >= 6204 words, the whole program\)"):
        compile_model(model, _config(max_k=1024, weight_depth=6203))


def test_weight_memory_hint_across_an_address_width():
    # From 128 words: the digits network's program does not fit 512 (9-bit weight addresses),
    # so the least depth is found among the 10-bit ones: 522 words.
    model = digits_net("adder")
    with pytest.raises(CompileError) as e:
        compile_model(model, _config(max_k=72, weight_depth=128))
    least = e.value.need["weight_depth"]
    assert least == 522
    with pytest.raises(CompileError):
        compile_model(model, _config(max_k=72, weight_depth=512))
    compile_model(model, _config(max_k=72, weight_depth=least))
    with pytest.raises(CompileError):
        compile_model(model, _config(max_k=72, weight_depth=least - 1))


def test_wrong_pe_kind():
    with pytest.raises(CompileError, match="^layer conv1 uses shift operations; this build's PEs "
                       "are adder: rebuild with pe=shift or use a adder model$"):
        compile_model(digits_net("shift"), _config())


def test_missing_requant_mode():
    with pytest.raises(CompileError) as e:
        compile_model(digits_net("adder", mode="mul"), _config())
    assert str(e.value) == ("layer conv1 uses requantisation mode 'mul'; this build has 'shift': "
                            "rebuild with requant_mode=mul or use a model quantised for 'shift'")


def test_reduction_beyond_the_accumulator():
    with pytest.raises(CompileError) as e:
        compile_model(digits_net("adder"), _config(max_k=64))
    assert str(e.value) == ("layer conv2 sums 72 terms per output; this build's accumulators hold "
                            "at most 64: rebuild with max_k >= 72")


def test_activation_buffer_too_small():
    with pytest.raises(CompileError) as e:
        compile_model(layer_case("pool", "adder"), _config(act_depth=16))
    assert str(e.value) == ("the input (2x7x7) needs 49 words per activation bank; this build has "
                            "16: rebuild with act_depth >= 49")
    with pytest.raises(CompileError) as e:
        compile_model(layer_case("conv_s1_p1", "adder"), _config(act_depth=40))
    assert str(e.value) == ("layer conv's output (5x5x5) needs 50 words per activation bank "
                            "(200 B); this build has 40 (160 B): rebuild with "
                            "act_depth >= 50 or use a smaller model")


def _two_convs():
    """An 8x8 input (64 words per bank) through convs of 4 and 8 channels (64 and 128 words),
    and the build options it needs."""
    from addershift.sw.examples import random_conv
    rng = np.random.default_rng(1)
    model = QModel(input_shape=(1, 8, 8), layers=[
        random_conv(rng, "conv1", "adder", 1, 4, mode="pow2x2"),
        random_conv(rng, "conv2", "adder", 4, 8, mode="pow2x2")])
    return model, dict(requant_mode="pow2x2", max_k=36)


def test_activation_hint_is_the_whole_programs():
    # The input (64 words) is refused first, but the second conv's output takes 128.
    model, options = _two_convs()
    with pytest.raises(CompileError) as e:
        compile_model(model, _config(act_depth=40, **options))
    assert str(e.value) == ("the input (1x8x8) needs 64 words per activation bank; this build "
                            "has 40: rebuild with act_depth >= 128")
    assert e.value.need == {"act_depth": 128}
    compile_model(model, _config(act_depth=128, **options))
    with pytest.raises(CompileError, match=r"^layer conv2's output \(8x8x8\) needs 128 words"):
        compile_model(model, _config(act_depth=127, **options))


def test_a_hint_names_every_memory_the_program_needs():
    # Refused on one memory, the program would be refused on another further on: the hint names
    # both, so that one rebuild fits (the input, conv1's weights and conv2's output here).
    model, options = _two_convs()
    with pytest.raises(CompileError) as e:
        compile_model(model, _config(act_depth=40, weight_depth=16, **options))
    assert str(e.value) == ("the input (1x8x8) needs 64 words per activation bank; this build "
                            "has 40: rebuild with act_depth >= 128 and weight_depth >= 97")
    assert e.value.need == {"act_depth": 128, "weight_depth": 97}
    compile_model(model, _config(**e.value.need, **options))
    with pytest.raises(CompileError) as e:
        compile_model(model, _config(act_depth=64, weight_depth=16, **options))
    assert str(e.value).endswith("rebuild with a larger weight memory (weight_depth >= 97 "
                                 "words, the whole program) and act_depth >= 128 or use a "
                                 "smaller model")
    assert e.value.need == {"weight_depth": 97, "act_depth": 128}


def test_hints_past_what_a_build_can_hold_or_where_another_limit_stops():
    # 1,105,425 words per bank is past ArrayConfig's 2**20: the refusal, not the search's
    # ValueError, reaches the caller.
    from addershift.sw.examples import random_conv
    rng = np.random.default_rng(0)
    big = QModel(input_shape=(17, 255, 255), layers=[
        random_conv(rng, "c", "adder", 17, 1, kernel=1, padding=0, mode="pow2x2")])
    with pytest.raises(CompileError, match=r"^the input \(17x255x255\) needs 1105425 words per "
                                           r"activation bank; .* act_depth >= 1105425$"):
        compile_model(big, ArrayConfig(pe="adder", rows=1, cols=1, requant_mode="pow2x2"))
    # A reduction past max_k after the refused layer: the hint is the refused layer's need, and
    # does not claim the whole program.
    model, options = _two_convs()
    with pytest.raises(CompileError) as e:
        compile_model(model, _config(**{**options, "max_k": 9}, weight_depth=16))
    assert str(e.value).endswith("(weight_depth >= 25 words) or use a smaller model")
    with pytest.raises(CompileError, match=r"^layer conv2 sums 36 terms per output"):
        compile_model(model, _config(**{**options, "max_k": 9}, **e.value.need))


def test_parameter_memory_too_small():
    # One word per requantiser transfer: 24 channels are 24 one-lane words, 6 four-lane words.
    net = digits_net("adder", mode="pow2x2")
    with pytest.raises(CompileError) as e:
        compile_model(net, _config(requant_mode="pow2x2", param_depth=16, requant_lanes=1))
    # The hint is the whole program's need (the classifier's 12 words after conv2's).
    assert str(e.value) == ("layer conv2 needs requantisation parameters up to word 24; this build "
                            "has 16 words: rebuild with param_depth >= 36")
    compile_model(net, _config(requant_mode="pow2x2", param_depth=36, requant_lanes=1))
    with pytest.raises(CompileError, match="^layer fc needs requantisation parameters up to word "
                                           "36; .* param_depth >= 36$"):
        compile_model(net, _config(requant_mode="pow2x2", param_depth=35, requant_lanes=1))
    four = compile_model(net, _config(requant_mode="pow2x2", param_depth=16))
    assert len(four.param_words) == (8 + 16 + 12) // 4


def test_other_mismatches():
    with pytest.raises(CompileError, match="^the model's activations are 6 bits; this build's are "
                       "8: rebuild with x_bits=6$"):
        compile_model(digits_net("adder", x_bits=6), _config())
    with pytest.raises(CompileError, match=r"^layer conv1 has shift exponents over a span of 7 "
                       r"\(p_min -4, p_max 3\); this build's span is 3: rebuild with "
                       r"p_max - p_min >= 7$"):
        compile_model(digits_net("shift"), _config(pe="shift", p_min=0, p_max=3))
    with pytest.raises(CompileError, match=r"^layer conv1 has biases in \[-\d+, \d+\]; this build's "
                       r"bias is 8 bits: rebuild with bias_bits >= \d+$"):
        compile_model(digits_net("adder"), _config(bias_bits=8))


def test_limits_of_the_generator_are_compile_errors():
    # Each was a bare ValueError from packing the descriptor, naming no layer and no fix.
    from addershift.sw.examples import random_conv
    rng = np.random.default_rng(0)
    pooled = QModel(input_shape=(1, 4, 4), layers=[
        random_conv(rng, "conv", "mul", 1, 2, kernel=1, padding=0),
        MaxPool2d("pool", kernel=1, stride=300)])
    with pytest.raises(CompileError, match=r"^layer conv: pool stride 300 exceeds the sequencer's "
                                           r"limit of 255$"):
        default_config(pooled)
    strided = QModel(input_shape=(1, 1, 16), layers=[
        random_conv(rng, "conv", "mul", 1, 2, kernel=1, padding=0, stride=4, mode="mul")])
    with pytest.raises(CompileError, match=r"^layer conv: its stride 4 times its input width 16 "
                                           r"is more than the generator's row step holds at "
                                           r"act_depth 16: rebuild with act_depth >= 17$"):
        compile_model(strided, _config(pe="mul", requant_mode="mul", act_depth=16))
    # The least depth with the address bits the step needs (a 5-bit address from 17 words).
    compile_model(strided, _config(pe="mul", requant_mode="mul", act_depth=17))
    padded = QModel(input_shape=(1, 4, 4), layers=[       # one output pixel per 20 of padding
        random_conv(rng, "conv", "mul", 1, 2, kernel=1, padding=8, stride=20, mode="mul")])
    with pytest.raises(CompileError, match=r"reaches beyond the activation address range of "
                                           r"this build \(act_depth 16\): rebuild with "
                                           r"act_depth >= (\d+)$") as e:
        compile_model(padded, _config(pe="mul", requant_mode="mul", act_depth=16))
    need = int(str(e.value).rsplit(" ", 1)[1])
    compile_model(padded, _config(pe="mul", requant_mode="mul", act_depth=need))
    # default_config sizes the buffers by these limits too (it refused its own build)
    small = {"act_depth": 16, "weight_depth": 16, "param_depth": 16}
    assert default_config(strided, rows=2, cols=2, least=small).act_depth == 32
    far = QModel(input_shape=(1, 10, 10), layers=[
        random_conv(rng, "conv", "mul", 1, 2, kernel=1, padding=100, stride=255, mode="mul")])
    assert default_config(far, rows=2, cols=2).act_depth == 1024
    wide = digits_net("mul", mode="mul")          # 16-bit logits: golden allows them, no build
    wide.layers[-1].requant.out_bits = 16
    wide.validate()
    with pytest.raises(CompileError, match=r"^layer fc requantises to 16 bits; this build's "
                                           r"activations are 8 bits, and every layer's outputs "
                                           r"are stored as activations: requantise it to 8 bits "
                                           r"\(requant.out_bits\)$"):
        compile_model(wide, _config(pe="mul", requant_mode="mul"))


def _random_requant(rng, mode, channels):
    """Requantisation parameters of every kind, dead channels (huge shifts) and huge biases
    among them."""
    shifts = lambda: rng.choice([0, 1, 5, 12, 20, SHIFT_MAX], channels).astype(np.int8)
    if mode == "shift":
        params = {"shift": shifts()}
    elif mode == "pow2x2":
        # Shifts far apart make products beyond int64, which the model loader refuses.
        k1 = shifts()
        k2 = np.clip(k1 + rng.choice([-3, 0, 2, 8], channels), 0, SHIFT_MAX).astype(np.int8)
        params = {"sign1": rng.integers(-1, 2, channels).astype(np.int8), "shift1": k1,
                  "sign2": rng.integers(-1, 2, channels).astype(np.int8), "shift2": k2}
    else:
        params = {"multiplier": rng.choice([0, 1, -3, 77, 32767, -32768], channels)
                  .astype(np.int32), "shift": shifts()}
    bias = rng.choice([0, 1, -1, 300, -300, 1 << 20, -(1 << 20), 1 << 30, -(1 << 31),
                       (1 << 31) - 1], channels).astype(np.int32)
    return Requant(mode=mode, bias=bias, params=params, out_bits=int(rng.choice([4, 8])))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(3))
def test_compiled_biases_keep_every_output(mode, seed):
    # Every accumulator of the width, every channel: the same outputs with the compiled bias. A
    # changed bias is the one nearest 0 that does so: one step closer changes an output.
    rng = np.random.default_rng(seed)
    acc_bits, channels = 12, 48
    rq = _random_requant(rng, mode, channels)
    got = compiled_biases(rq, acc_bits)
    acc = np.repeat(np.arange(int_range(acc_bits)[0], int_range(acc_bits)[1] + 1)[:, None],
                    channels, axis=1)

    def outputs(bias):
        return requantize(acc, bias, mode, rq.params, out_bits=rq.out_bits)

    np.testing.assert_array_equal(outputs(got), outputs(rq.bias))
    assert np.all(np.abs(got) <= np.abs(rq.bias.astype(np.int64)))
    changed = np.flatnonzero(got != rq.bias)
    assert changed.size, "no channel of this draw could shrink its bias: the test checks nothing"
    for ch in changed:
        assert np.unique(outputs(rq.bias)[:, ch]).size == 1      # only constant channels change
        if got[ch] != 0:
            closer = got.copy()
            closer[ch] -= np.sign(got[ch])
            assert not np.array_equal(outputs(closer)[:, ch], outputs(rq.bias)[:, ch])


def test_a_dead_channel_does_not_widen_the_build():
    # The shipped adder model's linear layer has a channel whose factor rounds every sum to 0
    # and whose bias the quantiser clamped at about 2**30: it is stored as 0, so the build's
    # biases take 13 bits plus the headroom, not 32.
    model = load_model(pathlib.Path(__file__).resolve().parents[2] / "models" / "digits_adder.npz")
    fc = model.compute_layers()[-1]
    assert fc.requant.bias.max() > 1 << 29
    config = default_config(model, rows=2, cols=2)
    assert compiled_biases(fc.requant, config.acc_bits).max() < 1 << 12
    assert config.bias_bits == 13 + BIAS_HEADROOM
    _check_stages(model, config, images=2)
    with pytest.raises(CompileError, match=r"^layer conv2 has biases in \[2052, 3010\]; this "
                                           r"build's bias is 12 bits: rebuild with bias_bits >= 13$"):
        compile_model(model, default_config(model, rows=2, cols=2, bias_bits=12))


def test_memories_are_the_least_powers_of_two_that_hold_the_program():
    # `least` lowers the floors (a small board's); each memory is then what the program needs,
    # rounded up to a power of two. The 2x2's program is 980 weight words (1,028 in the
    # generous build default_config measures on, whose descriptors carry wider addresses).
    model = load_model(pathlib.Path(__file__).resolve().parents[2] / "models" / "digits_adder.npz")
    least = {"weight_depth": 16, "act_depth": 16, "param_depth": 16}
    config = default_config(model, rows=2, cols=2, requant_lanes=1, least=least)
    assert (config.weight_depth, config.act_depth, config.param_depth) == (1024, 64, 64)
    assert len(compile_model(model, config).weight_words) == 980
    with pytest.raises(CompileError, match="weight_depth"):
        compile_model(model, default_config(model, rows=2, cols=2, requant_lanes=1,
                                            weight_depth=512))
    # Without `least`, the ArrayConfig defaults are the floors.
    assert default_config(model, rows=2, cols=2).weight_depth == 4096
    # An override is kept as given.
    assert default_config(model, rows=2, cols=2, least=least, weight_depth=2048).weight_depth == 2048


def test_unsupported_layer_sequences():
    model = digits_net("adder")
    for layers, message in [
        ([ReLU("r")] + model.layers, "^layer r \\(relu\\) must follow a conv2d or linear layer"),
        (model.layers[:3] + [MaxPool2d("p2", kernel=1, stride=1)] + model.layers[3:],
         "^layer p2 \\(maxpool2d\\): one pooling layer per conv2d layer is supported$"),
    ]:
        bad = QModel(input_shape=(1, 8, 8), layers=layers)
        with pytest.raises(CompileError, match=message):
            compile_model(bad, _config())
    pool = layer_case("pool", "adder")
    pool.layers[2] = MaxPool2d("p", kernel=3, stride=2)
    with pytest.raises(CompileError, match="^layer p \\(maxpool2d\\): overlapping windows "
                       "\\(kernel 3 > stride 2\\) are not supported; use kernel <= stride$"):
        compile_model(pool, _config())
    gap = layer_case("gap", "adder")
    gap.layers.insert(3, ReLU("late"))
    with pytest.raises(CompileError, match="^layer late \\(relu\\) after a global average pool is "
                       "not supported: move it before the pool$"):
        compile_model(gap, _config())
    assert isinstance(gap.layers[2], GlobalAvgPool)
    with pytest.raises(CompileError, match="^layer gap \\(globalavgpool\\): this build has no global "
                       "average pooling: rebuild with global_pool=True$"):
        compile_model(layer_case("gap", "adder"), _config(global_pool=False))


def test_pixel_counts_follow_the_activation_memory():
    # A 1x1 conv with padding 6 makes 16x16 output pixels from a 4x4 input; pooling keeps 4x4.
    from addershift.sw.examples import random_conv
    conv = random_conv(np.random.default_rng(0), "conv", "adder", 4, 4, kernel=1, padding=6)
    model = QModel(input_shape=(4, 4, 4), layers=[conv, MaxPool2d(name="pool", kernel=4, stride=4)])
    with pytest.raises(CompileError) as e:
        compile_model(model, _config(max_k=16, act_depth=32))
    assert str(e.value) == ("layer conv has 256 output pixels; this build counts up to 255 (8 per "
                            "activation word): rebuild with act_depth >= 33")
    program = compile_model(model, _config(max_k=16, act_depth=33))
    assert program.stages[0].conv_shape == (16, 16)
    # The hint is the whole program's: a wider conv after the pool needs 48 words.
    wider = QModel(input_shape=(4, 4, 4), layers=[*model.layers, random_conv(
        np.random.default_rng(1), "conv2", "adder", 4, 12, kernel=1, padding=0)])
    with pytest.raises(CompileError, match=r"counts up to 255 .*: rebuild with act_depth >= 48$"):
        compile_model(wider, _config(max_k=16, act_depth=32))
    compile_model(wider, _config(max_k=16, act_depth=48))
    with pytest.raises(CompileError, match=r"^layer conv2's output \(12x4x4\) needs 48 words"):
        compile_model(wider, _config(max_k=16, act_depth=47))
