"""Quantisation: requantisation fields, image quantisation, and the fine-tuning network whose forward
pass must equal the golden model on the exported file, integer for integer."""

import itertools

import numpy as np
import pytest

from addershift.sw.examples import digits_net
from addershift.sw.numerics import requant_scale
from addershift.sw.quantize import QuantizeError, quantize_images, requant_fields


def test_shift_fields_round_in_the_log_domain():
    m = np.array([1.0, 0.5, 0.3, 0.7, 2.0 ** -41, 3.0])
    np.testing.assert_array_equal(requant_fields("shift", m)["shift"], [0, 1, 2, 1, 40, 0])
    with pytest.raises(QuantizeError, match=r"layer 'fc': channel 1 needs a negative scale \(-0.5\), which "
                                            r"the 'shift' requantisation cannot hold \(use pow2x2 or mul\)"):
        requant_fields("shift", np.array([0.5, -0.5]), where="layer 'fc'")


def test_pow2x2_fields_are_the_best_two_powers():
    rng = np.random.default_rng(1)
    m = np.concatenate([rng.uniform(-1, 1, 60) * np.exp2(-rng.integers(0, 20, 60)), [0.0, 1.0, 0.75, 1.5]])
    fields = requant_fields("pow2x2", m)
    got = requant_scale("pow2x2", fields)
    # Brute force over every pair of signed powers of two (with one sign 0 allowed).
    cands = [s1 * 2.0 ** -k1 + s2 * 2.0 ** -k2
             for s1, s2 in itertools.product((-1, 0, 1), repeat=2) for k1 in range(0, 25) for k2 in range(k1, 41)]
    cands = np.unique(cands)
    for value, g in zip(m, got):
        best = np.abs(cands - value).min()
        assert abs(g - value) <= best * (1 + 1e-12) + 1e-300, (value, g)
    assert got[-4:].tolist() == [0.0, 1.0, 0.75, 1.5]


def test_mul_fields_keep_fourteen_bits():
    m = np.array([0.9, -0.123, 3.7e-5, 1.7])
    fields = requant_fields("mul", m)
    assert np.all(np.abs(fields["multiplier"]) < 1 << 14)
    np.testing.assert_allclose(requant_scale("mul", fields), m, rtol=2.0 ** -12)


def test_quantize_images():
    images = np.array([0.0, 0.5, 1.0, 1.2, -0.1, 0.5 / 127]).reshape(1, 1, 2, 3)
    np.testing.assert_array_equal(quantize_images(8, images).ravel(), [0, 64, 127, 127, 0, 1])
    model = digits_net("adder")
    model.input_scale = 1 / 63
    np.testing.assert_array_equal(quantize_images(model, images).ravel(), [0, 32, 63, 76, 0, 0])
    with pytest.raises(TypeError, match="quantize_images needs a QModel or an activation width, not 'x'"):
        quantize_images("x", images)


# --- the fine-tuning network: exact against the golden model --------------------------------------

torch = pytest.importorskip("torch")


def _float_net(pe, *, seed=0, spec=None):
    """A random network (``spec``, else the digits one) with BatchNorm statistics measured on
    random images (so no layer is dead)."""
    from addershift.sw.train import FloatNet, digits_spec, set_determinism
    set_determinism(seed)
    net = FloatNet(digits_spec() if spec is None else spec, (1, 8, 8), pe=pe)
    gen = torch.Generator().manual_seed(seed)
    bns = [getattr(net, e["bn"]) for e in net.compute_entries()]
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("adder"):
                # Wider than the activations, as trained AdderNet weights are: the clip identity matters.
                p.copy_(torch.randn(p.shape, generator=gen) * 3 + 0.5)
        for bn in bns:
            bn.weight.uniform_(0.5 if pe == "adder" else -1.5, 1.5, generator=gen)
            bn.bias.uniform_(-0.5, 0.5, generator=gen)
            bn.momentum = None          # a plain average over the batches below
        net.train()
        net(torch.rand((256, 1, 8, 8), generator=gen))
    net.eval()
    return net


def _qnet(net, mode, images):
    from addershift.sw.quantize import QuantNet, calibrate
    x_int = quantize_images(8, images)
    scales = calibrate(net, x_int.astype(np.float32) / 127)
    return QuantNet(net, mode=mode, x_bits=8, scales=scales, input_scale=1 / 127, calib=x_int), x_int


def _exported_is_exact(qnet, x_int, tmp_path):
    """Save and load ``qnet``'s export; every layer's output on ``x_int`` must equal the network's
    own. Returns the loaded model and its golden trace."""
    from addershift.sw.golden import trace
    from addershift.sw.model import load_model, save_model
    save_model(qnet.export(), tmp_path / "m.npz")
    model = load_model(tmp_path / "m.npz")
    collected = []
    with torch.no_grad():
        qnet(x_int, collect=collected)
    golden = trace(model, x_int)
    for layer, mine, ref in zip(model.layers, collected, golden):
        np.testing.assert_array_equal(mine.numpy().astype(np.int64), ref, err_msg=layer.name)
    return model, golden


@pytest.mark.train
@pytest.mark.parametrize("pe, mode", list(itertools.product(("adder", "shift", "mul"), ("shift", "pow2x2", "mul"))))
def test_quant_net_is_the_golden_model(tmp_path, pe, mode):
    images = np.random.default_rng(2).uniform(0, 1, (40, 1, 8, 8))
    net = _float_net(pe)
    model, golden = _exported_is_exact(*_qnet(net, mode, images), tmp_path)
    assert len(np.unique(golden[-1])) > 20          # not a degenerate (saturated) network
    if pe == "adder":
        w = model.layers[0].weights["weight"]
        assert w.min() >= 0 and w.max() <= 127 and (w == 0).any() and (w == 127).any()


@pytest.mark.train
def test_adder_layer_without_a_relu_in_front_takes_signed_inputs(tmp_path):
    # conv2's inputs are conv1's signed outputs (max-pooled): its weights keep their negative
    # values, where the [0, qmax] clip of a layer behind a ReLU would change |x - w| for x < 0.
    from addershift.sw.train import digits_spec
    spec = [e for e in digits_spec() if e["name"] != "relu1"]
    images = np.random.default_rng(3).uniform(0, 1, (40, 1, 8, 8))
    model, golden = _exported_is_exact(*_qnet(_float_net("adder", spec=spec), "mul", images),
                                       tmp_path)
    assert golden[0].min() < 0                          # conv1's outputs do go negative
    assert model.layers[0].weights["weight"].min() >= 0     # the input grid is [0, qmax]
    assert model.layers[2].weights["weight"].min() < 0      # conv2 (behind the pool)


@pytest.mark.train
@pytest.mark.parametrize("x_bits", [8, 16])
def test_adder_weights_keep_their_distance_at_every_width(x_bits):
    # Trained adder weights lie far outside the activations' range; at 16 bits a bound of 2**15
    # steps (one real unit) clamped most of them, and the network fell to chance accuracy.
    from addershift.sw.quantize import QuantNet, calibrate
    net = _float_net("adder")
    images = np.random.default_rng(4).uniform(0, 1, (40, 1, 8, 8))
    qmax = (1 << (x_bits - 1)) - 1
    x_int = quantize_images(x_bits, images)
    qnet = QuantNet(net, mode="mul", x_bits=x_bits, calib=x_int, input_scale=1 / qmax,
                    scales=calibrate(net, x_int.astype(np.float32) / qmax))
    layer = qnet.layers[0]
    u = torch.full_like(getattr(qnet, f"{layer.name}__w"), 4.0 * qmax)    # 4 real units
    assert torch.equal(qnet.int_weights(layer, u=u), u)


def test_pow2x2_fields_near_a_power_of_two_fit_the_model_file():
    # A second power 35 below the first made M = 2**35 + 1: the model file refuses that product.
    from addershift.sw.model import Linear, QModel, Requant
    from addershift.sw.numerics import MULTIPLIER_BITS, Op, RequantMode, requant_multiplier
    m = np.array([1 + 2.0 ** -20, 1 + 2.0 ** -35, 0.25 * (1 - 2.0 ** -33), -(1 + 2.0 ** -13)])
    fields = requant_fields("pow2x2", m)
    mult, _ = requant_multiplier(RequantMode.POW2X2, fields)
    assert np.abs(mult).max() <= 1 << (MULTIPLIER_BITS - 2)
    np.testing.assert_allclose(requant_scale("pow2x2", fields), m, rtol=2.0 ** -14)
    assert requant_scale("pow2x2", fields)[3] == m[3]    # 14 apart: both powers kept
    fc = Linear(name="fc", op=Op.MUL, weights={"weight": np.ones((4, 4), np.int8)}, w_bits=8,
                requant=Requant(mode=RequantMode.POW2X2, bias=np.zeros(4, np.int32), params=fields))
    QModel(input_shape=(4,), layers=[fc]).validate()


@pytest.mark.train
def test_integer_network_tracks_the_float_one():
    """Post-training quantisation of a random network keeps most of its decisions."""
    images = np.random.default_rng(3).uniform(0, 1, (200, 1, 8, 8)).astype(np.float32)
    for pe, mode in (("adder", "pow2x2"), ("mul", "mul"), ("shift", "pow2x2")):
        net = _float_net(pe)
        qnet, x_int = _qnet(net, mode, images)
        with torch.no_grad():
            ref = net(torch.from_numpy(x_int.astype(np.float32) / 127)).argmax(1)
            got = qnet(x_int).argmax(1)
        assert (ref == got).float().mean() > 0.8, pe


@pytest.mark.train
def test_negative_adder_scale_cannot_use_shift_mode():
    net = _float_net("adder")
    with torch.no_grad():
        net.bn2.weight[3] = -0.5
    with pytest.raises(QuantizeError, match="layer 'conv2': channel 3 has a negative BatchNorm scale; adder "
                                            "weights cannot flip sign"):
        _qnet(net, "shift", np.random.default_rng(0).uniform(0, 1, (8, 1, 8, 8)))
    _qnet(net, "pow2x2", np.random.default_rng(0).uniform(0, 1, (8, 1, 8, 8)))   # signed modes can


@pytest.mark.train
def test_finetuning_lowers_the_loss_and_keeps_the_best_state():
    """One power of two per channel costs a shift network accuracy. Fine-tuning lowers the loss
    on the images it sees and returns the best state, never one less accurate there than the
    start. (Whether held-out accuracy rises too depends on float rounding: on one CPU these
    four epochs won test accuracy back, on another they kept the start.)"""
    import torch
    import torch.nn.functional as F
    from addershift.sw.data import load_digits_split
    from addershift.sw.quantize import finetune, golden_accuracy
    from addershift.sw.train import FloatNet, default_config, digits_spec, set_determinism, train_float
    data = load_digits_split()
    set_determinism(0)
    net = FloatNet(digits_spec(), (1, 8, 8), pe="shift")
    float_acc = train_float(net, data, default_config("shift", epochs=4))
    qnet, x_int = _qnet(net, "shift", data.train_x)
    assert golden_accuracy(qnet.export(), data.test_x, data.test_y) < float_acc
    with torch.no_grad():
        start_loss = F.cross_entropy(qnet(torch.as_tensor(x_int).double()) * qnet.layers[-1].s_out,
                                     torch.as_tensor(data.train_y)).item()
    before = golden_accuracy(qnet.export(), data.train_x, data.train_y)
    lines = []
    finetune(qnet, x_int, data.train_y, epochs=4, log=lines.append)
    losses = [float(line.rsplit("loss ", 1)[1]) for line in lines]
    assert len(losses) == 4 and min(losses) < start_loss, (start_loss, losses)
    assert golden_accuracy(qnet.export(), data.train_x, data.train_y) >= before


def _set_state(key, value):
    return lambda c: c["state_dict"].__setitem__(key, value)


@pytest.mark.train
@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(spec="conv1"), r"ck.pt field 'spec': needs a non-empty list of layers"),
    (lambda c: c["state_dict"].pop("bn2.bias"),
     r"ck.pt: its weights do not fit its architecture \(Missing key\(s\) in state_dict: "
     r"\"bn2.bias\""),
    (_set_state("conv2.adder", torch.zeros(16, 8, 5, 5)),
     r"ck.pt: its weights do not fit its architecture \(size mismatch for conv2.adder: .* shape "
     r"torch.Size\(\[16, 8, 5, 5\]\) from checkpoint, the shape in current model is"),
    (lambda c: c.update(input_shape=[3, 8, 8]), r"size mismatch for conv1.adder"),
    (lambda c: c["state_dict"]["conv1.adder"].view(-1)[4].fill_(float("nan")),
     r"ck.pt: tensor 'conv1.adder': holds NaN or infinite values \(in float32\)$"),
    (lambda c: c["state_dict"]["bn3.running_var"].fill_(float("inf")),
     r"ck.pt: tensor 'bn3.running_var': holds NaN or infinite values"),
    # The checks an import makes: finite in float32 (the network's type), floating point,
    # dense, variances >= 0 (load_state_dict would cast or take each of these silently).
    (_set_state("bn1.running_var", torch.full((8,), 1e300, dtype=torch.float64)),
     r"ck.pt: tensor 'bn1.running_var': holds NaN or infinite values \(in float32\)$"),
    (_set_state("bn1.running_var", -torch.ones(8)),
     r"ck.pt: tensor 'bn1.running_var': holds negative variances$"),
    (_set_state("conv1.adder", torch.zeros(8, 1, 3, 3, dtype=torch.int64)),
     r"ck.pt: tensor 'conv1.adder': dtype torch.int64 is not floating point$"),
    (_set_state("bn1.running_var", torch.ones(8, dtype=torch.bool)),
     r"ck.pt: tensor 'bn1.running_var': dtype torch.bool is not floating point$"),
    (_set_state("conv1.adder", torch.zeros(8, 1, 3, 3).to_sparse()),
     r"ck.pt: tensor 'conv1.adder': a torch.sparse_coo tensor, not a dense one with values$"),
    (lambda c: c["state_dict"].__setitem__(5, torch.zeros(1)),
     r"ck.pt field 'state_dict': must be a dict of tensors by name$"),
    (lambda c: c.update(dataset=5), r"ck.pt field 'dataset': must be a data set's name, not 5$"),
    (lambda c: c.update(version=99),
     r"ck.pt: unknown version 99 \(this addershift reads version 1\)"),
    (lambda c: c.update(p_min=5, p_max=1),
     r"ck.pt: the exponent range p_min 5, p_max 1 must be integers with -32 <= p_min <= 32 and "
     r"p_min <= p_max <= p_min \+ 30$"),
    (lambda c: c.update(p_min=0, p_max=10 ** 30), r"ck.pt: the exponent range p_min 0, p_max 1"),
])
def test_malformed_float_checkpoint_says_what_is_wrong(tmp_path, change, message):
    from addershift.sw.importers import (CheckpointError, load_float_checkpoint,
                                         save_float_checkpoint)
    from addershift.sw.train import FloatNet, digits_spec
    save_float_checkpoint(FloatNet(digits_spec(), (1, 8, 8), pe="adder"), tmp_path / "ck.pt")
    checkpoint = torch.load(tmp_path / "ck.pt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, tmp_path / "ck.pt")
    with pytest.raises(CheckpointError, match=message):
        load_float_checkpoint(tmp_path / "ck.pt")


@pytest.mark.train
def test_a_folder_is_not_a_float_checkpoint(tmp_path):
    from addershift.sw.importers import CheckpointError, load_float_checkpoint
    with pytest.raises(CheckpointError, match=r"checkpoint .*: is a folder, not a file"):
        load_float_checkpoint(tmp_path)
