"""The PyTorch layers (reference behaviour), short training runs, the train/quantize commands, and the
shipped models."""

import json
import pathlib

import numpy as np
import pytest

from addershift.sw.data import load_digits_split
from addershift.sw.golden import conv2d
from addershift.sw.model import load_model
from addershift.sw.quantize import golden_accuracy

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"


@pytest.mark.parametrize("pe", ["adder", "shift", "mul"])
def test_shipped_models_reach_the_target(pe):
    """``make models`` output: integer accuracy on the digits test split, by the golden model."""
    model = load_model(MODELS / f"digits_{pe}.npz")
    data = load_digits_split()
    assert golden_accuracy(model, data.test_x, data.test_y) >= 0.98
    assert all(layer.op.value == pe for layer in model.compute_layers())
    modes = {layer.requant.mode.value for layer in model.compute_layers()}
    assert modes == ({"mul"} if pe == "mul" else {"pow2x2"})
    assert (MODELS / f"digits_{pe}.npz").stat().st_size < 8192


torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


# --- layers -----------------------------------------------------------------------------------

@pytest.mark.train
@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0), (1, 0)])
def test_adder2d_forward_is_the_golden_adder(stride, padding):
    from addershift.sw.layers_torch import Adder2d
    rng = np.random.default_rng(0)
    x = rng.integers(0, 9, (3, 2, 6, 5))
    layer = Adder2d(2, 4, 3, stride=stride, padding=padding).double()
    with torch.no_grad():
        layer.adder.copy_(torch.from_numpy(rng.integers(-4, 12, (4, 2, 3, 3)).astype(np.float64)))
        got = layer(torch.from_numpy(x).double()).numpy()
    ref = conv2d(x, "adder", {"weight": layer.adder.detach().numpy().astype(np.int64)}, kernel=(3, 3),
                 stride=stride, padding=padding)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.train
def test_adder_gradients_follow_the_reference():
    from addershift.sw.layers_torch import ADDER_ETA, adder_distance
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    adder_distance(x, w, eta=None).backward(g)
    diff = x.detach()[:, None, :] - w.detach()[None, :, :]                  # (n, o, k)
    np.testing.assert_allclose(-torch.cdist(x, w, p=1).detach(), -diff.abs().sum(-1))
    # weight: the full-precision (x - w) * g, not sign(x - w) * g
    np.testing.assert_allclose(w.grad, (diff * g[:, :, None]).sum(0))
    # input: HardTanh(w - x) * g
    np.testing.assert_allclose(x.grad, ((-diff).clamp(-1, 1) * g[:, :, None]).sum(1))
    # adaptive scaling: the weight gradient's norm becomes eta * sqrt(k)
    w.grad = None
    adder_distance(x, w).backward(g)
    assert w.grad.norm().item() == pytest.approx(ADDER_ETA * np.sqrt(w.numel()))
    np.testing.assert_allclose(w.grad / w.grad.norm(), (diff * g[:, :, None]).sum(0) /
                               (diff * g[:, :, None]).sum(0).norm())


@pytest.mark.train
def test_deepshift_q_rounds_in_the_log_domain():
    from addershift.sw.layers_torch import LinearShiftQ, round_power_of_2
    w = torch.tensor([0.3, -0.7, 0.01, 5.0, 0.0, -0.02], requires_grad=True)
    q = round_power_of_2(w, p_min=-5, p_max=2)
    assert q.tolist() == [0.25, -0.5, 0.0, 4.0, 0.0, -0.03125]
    q.sum().backward()
    assert w.grad.tolist() == [1.0] * 6                      # straight through
    layer = LinearShiftQ(3, 2, p_min=-3, p_max=0)
    assert set(dict(layer.named_parameters())) == {"weight"}
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.9, -0.3, 0.05], [2.0, 0.1, -0.6]]))
    np.testing.assert_array_equal(layer(torch.eye(3)).detach().t(), [[1, -0.25, 0], [1, 0.125, -0.5]])


@pytest.mark.train
def test_deepshift_ps_trains_exponent_and_sign():
    from addershift.sw.layers_torch import LinearShift
    layer = LinearShift(3, 1, p_min=-4, p_max=1)
    assert set(dict(layer.named_parameters())) == {"shift", "sign"}
    with torch.no_grad():
        layer.shift.copy_(torch.tensor([[-1.4, 0.6, -3.0]]))
        layer.sign.copy_(torch.tensor([[0.7, -0.2, -0.9]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    y = layer(x)
    assert y.item() == 0.5 * 1 + 0 * 2 - 0.125 * 3            # round(-0.2) = 0: a zero weight
    y.backward()
    np.testing.assert_allclose(layer.sign.grad, x)             # the sign's gradient skips 2**p
    np.testing.assert_allclose(layer.shift.grad, x * torch.tensor([[0.5, 0.0, -0.125]]) * np.log(2))


@pytest.mark.train
@pytest.mark.parametrize("pe, variant, keys", [
    ("adder", "q", {"conv1.adder", "conv2.adder", "fc.adder"}),
    ("shift", "q", {"conv1.weight", "conv2.weight", "fc.weight"}),
    ("shift", "ps", {"conv1.shift", "conv1.sign", "conv2.shift", "conv2.sign", "fc.shift", "fc.sign"}),
    ("mul", "q", {"conv1.weight", "conv2.weight", "fc.weight"}),
])
def test_float_net_uses_the_reference_names(pe, variant, keys):
    from addershift.sw.train import FloatNet, digits_spec
    net = FloatNet(digits_spec(), (1, 8, 8), pe=pe, variant=variant)
    names = set(net.state_dict())
    assert keys <= names
    assert {"bn1.running_mean", "bn3.weight"} <= names
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="PE kind must be one of adder, shift, mul, not 'div'"):
        FloatNet(digits_spec(), (1, 8, 8), pe="div")


# --- training ---------------------------------------------------------------------------------

@pytest.mark.train
@pytest.mark.parametrize("pe, variant", [("adder", "q"), ("shift", "q"), ("shift", "ps"), ("mul", "q")])
def test_short_training_learns(tmp_path, pe, variant):
    """A few epochs take the integer network far above chance; the reported accuracy is the golden
    model's on the file written."""
    from addershift.sw.train import train_command
    out = tmp_path / "m.npz"
    report = train_command(pe=pe, variant=variant, output=out, epochs=3, qat_epochs=1)
    data = load_digits_split()
    model = load_model(out)
    assert report["int_accuracy"] == golden_accuracy(model, data.test_x, data.test_y)
    assert report["int_accuracy"] > 0.6 and report["float_accuracy"] > 0.6
    assert report["test_images"] == 360 and report["mode"] == ("mul" if pe == "mul" else "pow2x2")
    assert [layer.op.value for layer in model.compute_layers()] == [pe] * 3


@pytest.mark.train
def test_training_on_an_idx_folder(tmp_path):
    """28x28 images from IDX files (made here) train the same topology with a 784-input classifier."""
    import importlib.util
    from addershift.sw.train import train_command
    spec = importlib.util.spec_from_file_location("_idx", pathlib.Path(__file__).with_name("test_data.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    helpers.write_idx_set(tmp_path / "idx", n_train=64, n_test=16)
    report = train_command(pe="adder", dataset=str(tmp_path / "idx"), output=tmp_path / "m.npz",
                           epochs=1, qat_epochs=1)
    model = load_model(tmp_path / "m.npz")
    assert model.input_shape == (1, 28, 28) and report["test_images"] == 16
    assert model.compute_layers()[-1].weights["weight"].shape == (10, 784)


@pytest.mark.train
def test_training_is_reproducible(tmp_path):
    from addershift.sw.train import train_command
    for name in ("a", "b"):
        train_command(pe="mul", output=tmp_path / f"{name}.npz", epochs=1, qat_epochs=1, seed=3)
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a.files == b.files
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.train
def test_train_and_quantize_commands(tmp_path, capsys):
    from addershift.sw.cli import main
    model, ckpt = tmp_path / "m.npz", tmp_path / "f.pt"
    assert main(["train", "--pe", "shift", "--epochs", "2", "--qat-epochs", "0", "-o", str(model),
                 "--save-float", str(ckpt), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pe"] == "shift" and report["output"] == str(model) and report["bytes"] > 0
    assert 0 <= report["int_accuracy"] <= 1 and report["epochs"] == 2
    again = tmp_path / "q.npz"
    assert main(["quantize", str(ckpt), "--mode", "mul", "--qat-epochs", "1", "-o", str(again)]) == 0
    out = capsys.readouterr().out
    assert "float accuracy" in out and "integer accuracy (golden model)" in out and "requant mul" in out
    assert {layer.requant.mode.value for layer in load_model(again).compute_layers()} == {"mul"}
    # errors are one line
    assert main(["quantize", str(model), "-o", str(again)]) == 1
    assert "m.npz: not a readable PyTorch file" in capsys.readouterr().err
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    assert main(["quantize", str(tmp_path / "other.pt"), "-o", str(again)]) == 1
    assert "not an addershift float checkpoint (format 'addershift-float')" in capsys.readouterr().err
    assert main(["train", "--dataset", str(tmp_path / "none"), "-o", str(again)]) == 1
    assert "none: not a folder" in capsys.readouterr().err
    assert main(["train", "--x-bits", "3", "-o", str(again)]) == 1
    assert "x_bits must be an integer in [4, 16], not 3" in capsys.readouterr().err
    assert main(["train", "--qat-epochs", "-1", "-o", str(again)]) == 1
    assert "qat_epochs must be an integer >= 0, not -1" in capsys.readouterr().err
