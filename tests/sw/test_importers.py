"""Import of checkpoints made with the reference codes' layer structures and parameter names
(written out here, independently of sw/layers_torch.py), and the errors a malformed one gets."""

import json
import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from addershift.sw.importers import CheckpointError, import_state_dict, load_arch, load_state_dict  # noqa: E402
from addershift.sw import importers  # noqa: E402
from addershift.sw.train import digits_spec  # noqa: E402

pytestmark = pytest.mark.train
SPEC = digits_spec()
FLAT, FC = {"kind": "flatten", "name": "flat"}, {"kind": "linear", "name": "fc", "out": 10}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


# --- the reference layer structures (parameter names as in the reference repositories) ----------

class RefAdder2d(nn.Module):
    """huawei-noah/AdderNet adder.py ``adder2d``: parameter ``adder``, optional bias ``b``."""

    def __init__(self, cin, cout, k, stride=1, padding=0, bias=False):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.adder = nn.Parameter(nn.init.normal_(torch.randn(cout, cin, k, k)))
        self.bias = bias
        if bias:
            self.b = nn.Parameter(nn.init.uniform_(torch.zeros(cout)))

    def forward(self, x):
        n, _, h, w = x.shape
        o, _, k, _ = self.adder.shape
        cols = F.unfold(x, k, padding=self.padding, stride=self.stride)          # (n, ckk, L)
        out = -(cols.unsqueeze(1) - self.adder.reshape(1, o, -1, 1)).abs().sum(2)
        oh = (h + 2 * self.padding - k) // self.stride + 1
        out = out.reshape(n, o, oh, -1)
        return out + self.b.reshape(1, -1, 1, 1) if self.bias else out


class RefShiftPS(nn.Module):
    """DeepShift modules.py ``Conv2dShift`` / ``LinearShift``: ``shift``, ``sign``, ``bias``."""

    def __init__(self, shape, bias=True, conv=None):
        super().__init__()
        self.conv = conv
        self.shift = nn.Parameter(torch.empty(shape).uniform_(-6, 0).round())
        self.sign = nn.Parameter(torch.empty(shape).uniform_(-1, 1))
        self.bias = nn.Parameter(torch.empty(shape[0]).uniform_(-0.1, 0.1)) if bias else None

    def forward(self, x):
        w = torch.exp2(self.shift.round()) * torch.sign(self.sign.round())
        if self.conv:
            return F.conv2d(x, w, self.bias, 1, self.conv)
        return F.linear(x, w, self.bias)


class RefShiftQ(nn.Module):
    """DeepShift modules_q.py ``Conv2dShiftQ`` / ``LinearShiftQ``: a float ``weight`` (+ ``bias``)."""

    def __init__(self, shape, conv=None):
        super().__init__()
        self.conv = conv
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-0.5, 0.5))
        self.bias = nn.Parameter(torch.empty(shape[0]).uniform_(-0.1, 0.1))

    def forward(self, x):
        w = torch.sign(self.weight) * torch.exp2(torch.round(torch.log2(self.weight.abs())))
        if self.conv:
            return F.conv2d(x, w, self.bias, 1, self.conv)
        return F.linear(x, w, self.bias)


class RefNet(nn.Module):
    def __init__(self, kind):
        super().__init__()
        if kind == "addernet":
            self.conv1, self.conv2 = RefAdder2d(1, 8, 3, padding=1), RefAdder2d(8, 16, 3, padding=1)
            self.fc = RefAdder2d(64, 10, 1)          # AdderNet's classifier is a 1x1 adder2d
        elif kind == "deepshift-ps":
            self.conv1, self.conv2 = RefShiftPS((8, 1, 3, 3), conv=1), RefShiftPS((16, 8, 3, 3), conv=1)
            self.fc = RefShiftPS((10, 64))
        else:
            self.conv1, self.conv2 = RefShiftQ((8, 1, 3, 3), conv=1), RefShiftQ((16, 8, 3, 3), conv=1)
            self.fc = RefShiftQ((10, 64))
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(8), nn.BatchNorm2d(16), nn.BatchNorm2d(10)
        self.kind = kind
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2, self.bn3):
                bn.weight.uniform_(0.5, 1.5, generator=gen)
                bn.bias.uniform_(-0.3, 0.3, generator=gen)
                bn.momentum = None
            self.train()
            self(torch.rand(128, 1, 8, 8, generator=gen))     # running statistics that fit
        self.eval()

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = x.flatten(1)
        if self.kind == "addernet":
            return self.bn3(self.fc(x[:, :, None, None]))[:, :, 0, 0]
        return self.bn3(self.fc(x)[:, :, None, None])[:, :, 0, 0]


def _wrapped(net):
    """As saved by many training scripts: DataParallel's prefix inside a ``state_dict`` entry."""
    return {"epoch": 3, "state_dict": {"module." + k: v for k, v in net.state_dict().items()}}


@pytest.mark.parametrize("kind", ["addernet", "deepshift-ps", "deepshift-q"])
def test_imported_network_computes_what_the_reference_does(tmp_path, kind):
    torch.manual_seed(0)
    ref = RefNet(kind)
    torch.save(_wrapped(ref), tmp_path / "ckpt.pth")
    net = import_state_dict(load_state_dict(tmp_path / "ckpt.pth"), spec=SPEC, input_shape=(1, 8, 8),
                            fmt="auto" if kind != "deepshift-q" else kind)
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), ref(x).numpy(), rtol=1e-4, atol=1e-3)
    assert net.pe == ("adder" if kind == "addernet" else "shift")


def _quantized(ref, kind, tmp_path, mode="pow2x2"):
    from addershift.sw.data import load_digits_split
    from addershift.sw.quantize import quantize_net
    from addershift.sw.train import default_config
    net = import_state_dict(ref.state_dict(), spec=SPEC, input_shape=(1, 8, 8), fmt=kind)
    return quantize_net(net, load_digits_split(), default_config(net.pe, mode=mode, qat_epochs=0))[0]


def test_deepshift_ps_weights_arrive_exactly():
    torch.manual_seed(1)
    ref = RefNet("deepshift-ps")
    model = _quantized(ref, "deepshift-ps", None)
    for name in ("conv1", "conv2", "fc"):
        layer = next(l for l in model.compute_layers() if l.name == name)
        sign = torch.sign(getattr(ref, name).sign.detach().round()).numpy().astype(np.int8)
        shift = getattr(ref, name).shift.detach().round().numpy().astype(np.int64)
        np.testing.assert_array_equal(layer.weights["sign"], sign.reshape(layer.weights["sign"].shape))
        mask = sign.reshape(layer.weights["sign"].shape) != 0
        assert (sign == 0).any()                                   # zero weights came through
        np.testing.assert_array_equal(layer.weights["exponent"][mask], shift.reshape(mask.shape)[mask])
        assert layer.p_max - layer.p_min == 7


def test_deepshift_q_weights_round_in_the_log_domain():
    torch.manual_seed(2)
    ref = RefNet("deepshift-q")
    model = _quantized(ref, "deepshift-q", None)
    layer = model.compute_layers()[0]
    w = ref.conv1.weight.detach().numpy()
    exp = np.round(np.log2(np.abs(w))).astype(np.int64)
    keep = exp >= layer.p_min                      # below the 8-exponent window: zero or 2**p_min
    np.testing.assert_array_equal(layer.weights["sign"][keep], np.sign(w)[keep])
    np.testing.assert_array_equal(layer.weights["exponent"][keep], exp[keep])


def test_addernet_weights_share_the_input_grid():
    torch.manual_seed(3)
    ref = RefNet("addernet")
    model = _quantized(ref, "addernet", None)
    layer = model.compute_layers()[0]
    # The first layer's weights sit on the input grid (scale 1/127), clipped to [0, 127].
    expected = np.clip(np.round(ref.conv1.adder.detach().numpy() * 127), 0, 127)
    np.testing.assert_array_equal(layer.weights["weight"], expected)


def test_import_command_on_a_trained_addernet(tmp_path, capsys):
    """A checkpoint in AdderNet's layout, trained briefly here, imports within a point of float."""
    from addershift.sw.cli import main
    from addershift.sw.data import load_digits_split
    from addershift.sw.train import FloatNet, default_config, set_determinism, train_float
    set_determinism(0)
    net = FloatNet(SPEC, (1, 8, 8), pe="adder")
    train_float(net, load_digits_split(), default_config("adder", epochs=6))
    ref = RefNet("addernet")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["fc.adder"] = state["fc.adder"][:, :, None, None]            # the 1x1 adder2d layout
    ref.load_state_dict(state)
    torch.save(_wrapped(ref), tmp_path / "adder.pth")
    assert main(["import", str(tmp_path / "adder.pth"), "-o", str(tmp_path / "m.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pe"] == "adder" and report["mode"] == "pow2x2" and report["format"] == "auto"
    assert report["float_accuracy"] > 0.9
    assert report["int_accuracy"] >= report["float_accuracy"] - 0.01


# --- malformed checkpoints --------------------------------------------------------------------

def _state(kind="addernet"):
    torch.manual_seed(0)
    return dict(RefNet(kind).state_dict())


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("conv2.adder"), "tensor 'conv2.adder' is missing from the checkpoint"),
    (lambda s: s.update({"conv2.adder": torch.zeros(16, 8, 5, 5)}),
     r"tensor 'conv2.adder': shape \(16, 8, 5, 5\) does not fit the architecture, which needs \(16, 8, 3, 3\)"),
    (lambda s: s.update({"bn1.running_var": torch.zeros(9)}),
     r"tensor 'bn1.running_var': shape \(9,\) does not fit the architecture, which needs \(8,\)"),
    (lambda s: s["conv1.adder"].view(-1)[4].fill_(math.nan), "tensor 'conv1.adder': holds NaN or infinite values"),
    # finite in float64, infinite in the network's float32
    (lambda s: s.update({"bn1.running_var": torch.full((8,), 1e300, dtype=torch.float64)}),
     r"tensor 'bn1.running_var': holds NaN or infinite values \(in float32\)"),
    (lambda s: s.update({"bn2.weight": torch.ones(16, dtype=torch.int64)}),
     "tensor 'bn2.weight': dtype torch.int64 is not floating point"),
    (lambda s: s.update({"head.weight": torch.ones(3)}),
     r"tensor 'head.weight' belongs to no layer of the architecture \(1 unused tensors"),
    (lambda s: s["bn3.running_var"].fill_(-1.0), "tensor 'bn3.running_var': holds negative variances"),
    (lambda s: s.update({"conv1.adder": s["conv1.adder"].to_sparse()}),
     "tensor 'conv1.adder': a torch.sparse_coo tensor, not a dense one with values"),
    (lambda s: s.update({"conv1.adder": torch.empty(8, 1, 3, 3, device="meta")}),
     "tensor 'conv1.adder': a meta tensor, not a dense one with values"),
])
def test_malformed_checkpoint_names_the_tensor(change, message):
    state = _state()
    change(state)
    with pytest.raises(CheckpointError, match=message):
        import_state_dict(state, spec=SPEC, input_shape=(1, 8, 8))


@pytest.mark.parametrize("kind, change, message", [
    # Shift checkpoints' exponents are read before the network is built: checked as tensors
    # first, then against the exponent range a model file holds.
    ("deepshift-q", lambda s: s.update({"conv1.weight": s["conv1.weight"] > 0}),
     "tensor 'conv1.weight': dtype torch.bool is not floating point"),
    ("deepshift-ps", lambda s: s.update({"conv1.shift": s["conv1.shift"] > 0}),
     "tensor 'conv1.shift': dtype torch.bool is not floating point"),
    ("deepshift-ps", lambda s: s["conv1.shift"].view(-1)[0].fill_(200.0),
     r"tensor 'conv1.shift': weights of 2\*\*200 need an exponent range that starts at 170, "
     r"outside the \[-32, 32\] a model file holds"),
    ("deepshift-ps", lambda s: [s[k].fill_(-200.0) for k in s if k.endswith(".shift")],
     r"tensor '(conv1|conv2|fc).shift': weights of 2\*\*-200 need an exponent range that starts "
     r"at -200"),
    ("deepshift-ps", lambda s: s.update({"conv1.shift": torch.full((8, 1, 3, 3), 1e300,
                                                                   dtype=torch.float64)}),
     r"tensor 'conv1.shift': holds NaN or infinite values \(in float32\)"),
    ("deepshift-ps", lambda s: s.pop("conv1.sign"),
     r"tensor 'conv1.sign' is missing from the checkpoint \(a DeepShift-PS layer has both "
     r"'shift' and 'sign'\)"),
])
def test_malformed_shift_checkpoint_names_the_tensor(kind, change, message):
    state = _state(kind)
    change(state)
    with pytest.raises(CheckpointError, match=f"^{message}"):
        import_state_dict(state, spec=SPEC, input_shape=(1, 8, 8),
                          fmt="deepshift-q" if kind == "deepshift-q" else "auto")


def test_a_tensor_with_and_without_the_dataparallel_prefix_is_refused():
    state = _state()
    state["module.conv1.adder"] = torch.zeros_like(state["conv1.adder"])
    with pytest.raises(CheckpointError, match="^checkpoint x.pth: tensor 'conv1.adder' is there "
                                              "twice, with and without DataParallel's 'module.' "
                                              "prefix$"):
        importers._unwrap(state, "checkpoint x.pth")


def test_format_detection_and_files(tmp_path):
    state = _state("deepshift-q")
    with pytest.raises(CheckpointError, match="tensor 'conv1.weight': DeepShift-Q and plain float weights "
                                              "look alike; say which with --format deepshift-q or --format float"):
        import_state_dict(state, spec=SPEC, input_shape=(1, 8, 8))
    assert import_state_dict(state, spec=SPEC, input_shape=(1, 8, 8), fmt="float").pe == "mul"
    with pytest.raises(CheckpointError, match="no tensor 'conv1.adder', 'conv1.shift' or 'conv1.weight'"):
        import_state_dict({"x.y": torch.ones(1)}, spec=SPEC, input_shape=(1, 8, 8))
    with pytest.raises(CheckpointError, match="missing.pth: no such file"):
        load_state_dict(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth: not a readable PyTorch file"):
        load_state_dict(tmp_path / "junk.pth")
    torch.save({"conv1.adder": [1, 2]}, tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="entry 'conv1.adder' is a list, not a tensor"):
        load_state_dict(tmp_path / "list.pth")
    with pytest.raises(ValueError, match="Checkpoint format must be one of auto, addernet, deepshift-q, "
                                         "deepshift-ps, float, not 'keras'"):
        import_state_dict(state, spec=SPEC, input_shape=(1, 8, 8), fmt="keras")


@pytest.mark.parametrize("layers, message", [
    ([{"kind": "flatten", "name": "f"}], "has no conv2d or linear layer: nothing to import"),
    ([FLAT, {**FC, "bn": "b"}, {**FC, "name": "fc2", "bn": "b"}],
     r"layer 2 \('fc2'\): 'bn' 'b' is taken by layer 1 \(its BatchNorm\)"),
    ([FLAT, {**FC, "bn": "b"}, {**FC, "name": "b"}], r"layer 2 \('b'\): 'name' 'b' is taken by "
                                                      r"layer 1 \(its BatchNorm\)"),
    ([FLAT, FC, FC], r"layer 2 \('fc'\): 'name' 'fc' is taken by layer 1$"),
])
def test_architecture_names_and_layers(tmp_path, layers, message):
    (tmp_path / "a.json").write_text(json.dumps({"input_shape": [1, 8, 8], "layers": layers}))
    with pytest.raises(CheckpointError, match=f"a.json: {message}"):
        load_arch(str(tmp_path / "a.json"))


def test_architecture_files(tmp_path):
    spec, shape = load_arch("digits", input_shape=(1, 8, 8))
    assert shape == (1, 8, 8) and [e["name"] for e in spec if e["kind"] == "linear"] == ["fc"]
    (tmp_path / "a.json").write_text(json.dumps({"input_shape": [1, 8, 8], "layers": SPEC}))
    assert load_arch(str(tmp_path / "a.json"))[0] == SPEC
    (tmp_path / "b.json").write_text(json.dumps({"layers": [{"kind": "relu"}]}))
    with pytest.raises(CheckpointError, match="layer 0 needs 'kind' and 'name'"):
        load_arch(str(tmp_path / "b.json"))
    with pytest.raises(CheckpointError, match="no such file \\(give 'digits' or a JSON file\\)"):
        load_arch(str(tmp_path / "none.json"))
    for layer, message in [({"kind": "conv2d", "name": "conv1", "kernel": 3}, "needs 'out'"),
                           ({"kind": "linear", "name": "fc", "out": "10"},
                            "'out' must be an integer >= 1, not '10'"),
                           ({"kind": "gelu", "name": "act"}, "unknown kind 'gelu'"),
                           ({"kind": "relu", "name": "r/1"}, r"'name' must be a non-empty string "
                                                             r"without '\.', '/'"),
                           ({"kind": "linear", "name": "fc", "out": 10, "bn": 5},
                            r"'bn' \(the BatchNorm's name\) must be a non-empty string"),
                           ({"kind": "linear", "name": "fc", "out": 10, "bias": "yes"},
                            "'bias' must be true or false, not 'yes'"),
                           # a field this version does not know would be ignored: another network
                           ({"kind": "conv2d", "name": "c", "out": 4, "kernel": 3, "dilation": 2},
                            "unknown field 'dilation' for a conv2d layer "
                            r"\(known: bias, bn, kernel, kind, name, out, padding, stride\)"),
                           ({"kind": "conv2d", "name": "c", "out": 4, "kernel": 3, "paddng": 1},
                            "unknown field 'paddng'"),
                           ({"kind": "relu", "name": "r", "bn": "bn1"},
                            r"unknown field 'bn' for a relu layer \(known: kind, name\)"),
                           # compute layers and BatchNorms are the network's attributes
                           ({"kind": "linear", "name": "forward", "out": 10},
                            "'name' 'forward' is a name the network uses itself; rename the layer"),
                           ({"kind": "linear", "name": "fc", "out": 10, "bn": "training"},
                            "'bn' 'training' is a name the network uses itself"),
                           ({"kind": "linear", "name": "fc", "out": 10, "bn": "fc"},
                            r"'bn' 'fc' is taken by layer 0$")]:
        (tmp_path / "c.json").write_text(json.dumps({"input_shape": [1, 8, 8], "layers": [layer]}))
        where = rf"c.json: layer 0 \({layer['name']!r}\)"
        with pytest.raises(CheckpointError, match=rf"{where}: {message}"):
            load_arch(str(tmp_path / "c.json"))


@pytest.mark.parametrize("shape, layers, message", [
    ([1, 0, 8], SPEC, "'input_shape' must be a list of positive integers, not [1, 0, 8]"),
    ([1, 8, True], SPEC, "'input_shape' must be a list of positive integers, not [1, 8, True]"),
    ("1x8x8", SPEC, "'input_shape' must be a list of positive integers, not '1x8x8'"),
    ([8, 8], SPEC, "layer 0 ('conv1'): a conv2d layer needs a (C, H, W) input, not (8, 8)"),
    ([1, 8, 8], [{"kind": "flatten", "name": "f"}, {"kind": "maxpool2d", "name": "p"}, FC],
     "layer 1 ('p'): a maxpool2d layer needs a (C, H, W) input, not (64,)"),
    ([1, 8, 8], [{"kind": "conv2d", "name": "c", "out": 4, "kernel": 9}],
     "layer 0 ('c'): its output shape (4, 0, 0) is empty (a conv2d layer on a (1, 8, 8) input)"),
    ([1, 8, 8], [{"kind": "maxpool2d", "name": "p", "kernel": 4},
                 {"kind": "maxpool2d", "name": "q", "kernel": 4}, FLAT, FC],
     "layer 1 ('q'): its output shape (1, 0, 0) is empty (a maxpool2d layer on a (1, 2, 2) input)"),
    ([1, 8, 8], [{"kind": "linear", "name": "fc", "out": 10}],
     "layer 0 ('fc'): a linear layer needs a flat (features,) input, not (1, 8, 8) (a flatten "
     "layer before it makes one)"),
])
def test_architecture_shapes_chain(tmp_path, shape, layers, message):
    # Each layer must take its input's shape: the checks the float network would otherwise fail
    # as an IndexError or a matrix product in PyTorch.
    (tmp_path / "a.json").write_text(json.dumps({"input_shape": shape, "layers": layers}))
    with pytest.raises(CheckpointError, match=re.escape(f"a.json: {message}")):
        load_arch(str(tmp_path / "a.json"))


def test_float_net_names_the_layer_that_cannot_take_its_input():
    from addershift.sw.train import FloatNet
    with pytest.raises(ValueError, match=re.escape(
            "layer 3 ('conv2'): its output shape (16, 0, 0) is empty (a conv2d layer on a (8, 4, 4) "
            "input)")):
        FloatNet([dict(e, kernel=5, padding=0) if e["name"] == "conv2" else e for e in SPEC],
                 (1, 8, 8), pe="adder")


def test_a_network_may_end_in_relu():
    # The model format and the compiler take a ReLU after the last layer (fused into its
    # requantiser); the class count is the network's output size.
    from addershift.sw.compiler import compile_model, default_config
    from addershift.sw.data import load_digits_split
    from addershift.sw.quantize import quantize_net
    from addershift.sw.train import FloatNet, default_config as train_config
    torch.manual_seed(0)
    net = FloatNet(SPEC + [{"kind": "relu", "name": "relu_out"}], (1, 8, 8), pe="mul").eval()
    model = quantize_net(net, load_digits_split(), train_config("mul", qat_epochs=0),
                         calib_images=200)[0]
    assert [layer.kind for layer in model.layers[-2:]] == ["linear", "relu"]
    assert model.labels == [str(i) for i in range(10)]
    compile_model(model, default_config(model))


@pytest.mark.parametrize("layers, shape", [
    (digits_spec(classes=5), "(5,)"),
    (SPEC[:-3] + [{"kind": "conv2d", "name": "head", "out": 10, "kernel": 2}], "(10, 3, 3)"),
])
def test_outputs_must_be_one_per_class(tmp_path, layers, shape):
    # (were a model scored against labels it cannot give, or a NumPy broadcasting error)
    from addershift.sw.data import load_digits_split
    from addershift.sw.quantize import QuantizeError, quantize_and_save
    from addershift.sw.train import FloatNet, default_config
    net = FloatNet(layers, (1, 8, 8), pe="mul")
    with pytest.raises(QuantizeError, match=re.escape(
            f"the network's output shape {shape} is not one score per class of data set "
            f"'digits' (10,)")):
        quantize_and_save(net, load_digits_split(), default_config("mul", qat_epochs=0),
                          tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []
