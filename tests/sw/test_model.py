"""The model file: a round trip, and one clear error (layer and field named) for each kind of bad file."""

import json
import pickle
import zipfile

import numpy as np
import pytest

from addershift.sw import golden
from addershift.sw.examples import digits_net
from addershift.sw.layer_cases import CASES, layer_case
from addershift.sw.model import ModelFileError, load_model, save_model


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.npz"
    save_model(digits_net("shift", mode="pow2x2"), path)
    return path


def _rewrite(path, edit):
    """Load the raw arrays and header, let ``edit`` change them, write them back."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(str(arrays.pop("header")))
    edit(header, arrays)
    np.savez(path, header=np.array(json.dumps(header)), **arrays)


@pytest.mark.parametrize("op", ["adder", "shift", "mul"])
@pytest.mark.parametrize("mode", ["shift", "pow2x2", "mul"])
def test_round_trip_is_exact(tmp_path, op, mode):
    model = digits_net(op, mode=mode, seed=5)
    save_model(model, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    x = np.random.default_rng(2).integers(0, 128, (4, 1, 8, 8))
    for a, b in zip(golden.trace(model, x), golden.trace(loaded, x)):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "m.npz").stat().st_size < 16_000


def _set(key, value, layer=None):
    def edit(header, arrays):
        (header["layers"][layer] if layer is not None else header)[key] = value
    return edit


def _array(name, fn):
    def edit(header, arrays):
        arrays[name] = fn(arrays[name])
    return edit


def _drop(name):
    return lambda header, arrays: arrays.pop(name)


def _add(name, value):
    return lambda header, arrays: arrays.__setitem__(name, value)


BAD = [
    (_set("version", 7), r"header field 'version': unknown version 7 \(this addershift reads version 1\)"),
    (_set("format", "onnx"), r"header field 'format': must be 'addershift-qmodel'"),
    (_drop("conv2.sign"), r"layer 3 \('conv2'\) field 'sign': array is missing from the file"),
    (_drop("fc.shift2"), r"layer 7 \('fc'\) field 'shift2': array is missing from the file"),
    (_add("conv9.weight", np.zeros(3, np.int8)), r"array 'conv9.weight': belongs to no layer"),
    (_array("conv1.sign", lambda a: a.astype(np.float32)), r"layer 0 \('conv1'\) field 'sign': dtype must be int8, not float32"),
    (_array("conv1.bias", lambda a: a.astype(np.int64)), r"layer 0 \('conv1'\) field 'bias': dtype must be int32, not int64"),
    (_array("conv1.bias", lambda a: a[:3]), r"layer 0 \('conv1'\) field 'bias': shape must be \(8,\), not \(3,\)"),
    (_array("conv1.sign", lambda a: np.where(a == 0, 2, a).astype(np.int8)),
     r"layer 0 \('conv1'\) field 'sign': value 2 is out of range \[-1, 1\]"),
    (_array("conv2.exponent", lambda a: np.full_like(a, 9)), r"layer 3 \('conv2'\) field 'exponent': value 9 is out of range \[-4, 3\]"),
    (_array("fc.shift1", lambda a: np.full_like(a, 41)), r"layer 7 \('fc'\) field 'shift1': value 41 is out of range \[0, 40\]"),
    (_array("conv2.sign", lambda a: a[:, :5]), r"layer 3 \('conv2'\) field 'sign': shape \(16, 5, 3, 3\) does not fit the input \(8, 4, 4\)"),
    # (out_channels left out: it is optional, and would name the disagreement at conv2.)
    (lambda h, a: [h["layers"][3].pop("out_channels")] + [
        a.__setitem__(k, a[k][:12]) for k in ("conv2.sign", "conv2.exponent", "conv2.bias", "conv2.sign1",
                                              "conv2.shift1", "conv2.sign2", "conv2.shift2")],
     r"layer 7 \('fc'\) field 'sign': shape \(10, 64\) does not fit the input \(48,\)"),
    (_set("kind", "attention", layer=1), r"layer 1 \('relu1'\) field 'kind': unknown layer kind 'attention'"),
    (_set("op", "xor", layer=0), r"layer 0 \('conv1'\) field 'op': unknown operation 'xor'"),
    (_set("stride", "2", layer=0), r"layer 0 \('conv1'\) field 'stride': has the wrong type str"),
    (_set("kernel", 9, layer=2), r"layer 2 \('pool1'\) field 'kernel': 9 is larger than the input 8x8x8 "
                                 r"\(the shapes before it: input 1x8x8 -> conv1 8x8x8 -> relu1 8x8x8\)$"),
    # The layer that does not fit names the shapes before it: the cause is the padding.
    (_set("padding", 1000, layer=0), r"layer 7 \('fc'\) field 'sign': shape \(10, 64\) does not fit the input "
                                     r"\(4016016,\): expected \(10, 4016016\) \(the shapes before it: input 1x8x8 "
                                     r"-> conv1 8x2006x2006 -> relu1 8x2006x2006 -> pool1 8x1003x1003 -> "),
    (lambda h, a: h["input"].update(shape=[1, 8]), r"input field 'shape': must be \(C, H, W\) or \(features,\)"),
    (lambda h, a: h["layers"][0].pop("padding"), r"layer 0 \('conv1'\) field 'padding': is missing"),
    (_set("labels", 5), r"header field 'labels': has the wrong type int"),
    (_set("labels", [0, 1]), r"header field 'labels': must be a list of strings"),
    (_set("version", True), r"header field 'version': unknown version True"),
    (_set("out_shape", 8, layer=0), r"layer 0 \('conv1'\) field 'out_shape': has the wrong type"),
    (_set("out_channels", "8", layer=0), r"field 'out_channels': has the wrong type str"),
    (_set("labels", ["zero", "one"]),
     r"header field 'labels': names 2 classes, but the model has 10 outputs"),
    (lambda h, a: h["input"].update(scale=float("nan")),
     r"input field 'scale': must be a positive finite number \(the real value of one input "
     r"step\), not nan"),
    (lambda h, a: h["input"].update(scale=0), r"input field 'scale': must be a positive finite"),
    (lambda h, a: h["layers"][0]["requant"].update(out_bits=16),
     r"layer 0 \('conv1'\) field 'requant.out_bits': 16 is wider than the model's 8-bit "
     r"activations; only the last conv2d/linear layer"),
    # A field the loader does not know is refused: the file means another network.
    (_set("padding", 1, layer=2), r"layer 2 \('pool1'\) field 'padding': is not a field of a maxpool2d "
                                  r"layer \(known: name, kind, out_shape, kernel, stride\)$"),
    (_set("groups", 8, layer=0), r"layer 0 \('conv1'\) field 'groups': is not a field of a conv2d layer "
                                 r"of operation 'shift' \(known: "),
    (_set("w_bits", 4, layer=7), r"layer 7 \('fc'\) field 'w_bits': is not a field of a linear layer of "
                                 r"operation 'shift'"),
    (_set("inplace", True, layer=1), r"layer 1 \('relu1'\) field 'inplace': is not a field of a relu layer"),
    (lambda h, a: h["layers"][0]["requant"].update(rounding="floor"),
     r"layer 0 \('conv1'\) field 'requant.rounding': is not a field of requant \(known: mode, out_bits\)"),
    (lambda h, a: h["input"].update(mean=0.5), r"input field 'mean': is not a field of the input"),
    (_set("author", "me"), r"header field 'author': is not a field of the header"),
    # Scales: a positive finite number, an integer too large for a float too.
    (lambda h, a: h["input"].update(scale=10**400),
     r"input field 'scale': must be a positive finite number \(the real value of one input step\), "
     r"not an integer too large for a float"),
    (_set("out_scale", 10**400, layer=3),
     r"layer 3 \('conv2'\) field 'out_scale': must be a positive finite number \(the real value of "
     r"one output step\), not an integer too large for a float"),
    (_set("out_scale", -0.5, layer=7), r"layer 7 \('fc'\) field 'out_scale': must be a positive finite "
                                       r"number .*, not -0.5"),
    (_set("out_scale", float("inf"), layer=0), r"layer 0 \('conv1'\) field 'out_scale': .*, not inf"),
    # A repeated name is named as such (not as another layer's missing arrays).
    (_set("name", "conv1", layer=3), r"layer 3 \('conv1'\) field 'name': 'conv1' is used by another layer"),
    (_set("name", "relu1", layer=4), r"layer 4 \('relu1'\) field 'name': 'relu1' is used by another layer"),
    (_set("name", "c.1", layer=0), r"layer 0 \('c.1'\) field 'name': must be a non-empty string without"),
    # Weights with fewer output channels than out_channels: the weights are named, not the bias.
    (lambda h, a: [a.__setitem__(k, a[k][:7]) for k in ("conv1.sign", "conv1.exponent")],
     r"layer 0 \('conv1'\) field 'sign': shape \(7, 1, 3, 3\) has 7 output channels, but the "
     r"layer's out_channels is 8"),
]


@pytest.mark.parametrize("edit,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_files_name_layer_and_field(saved, edit, message):
    _rewrite(saved, edit)
    with pytest.raises(ModelFileError, match=message):
        load_model(saved)


def test_not_a_model_file(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match=r"junk.npz: not a readable .npz archive"):
        load_model(tmp_path / "junk.npz")
    with pytest.raises(ModelFileError, match=r"no such file"):
        load_model(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ModelFileError, match=r"header: is missing \(not an addershift model file\)"):
        load_model(tmp_path / "plain.npz")


def test_adder_weights_must_share_the_activation_format(tmp_path):
    model = digits_net("adder")
    model.layers[0].w_bits = 4
    with pytest.raises(ModelFileError, match=r"layer 0 \('conv1'\) field 'w_bits': adder weights share"):
        save_model(model, tmp_path / "m.npz")


def test_only_the_last_compute_layer_may_requantise_wider(tmp_path):
    model = digits_net("shift")
    model.layers[-1].requant.out_bits = 16          # logits: nothing reads them as activations
    save_model(model, tmp_path / "m.npz")
    assert load_model(tmp_path / "m.npz").layers[-1].requant.out_bits == 16
    model.layers[3].requant.out_bits = 4            # narrower stays inside the activations' range
    save_model(model, tmp_path / "m.npz")


@pytest.mark.parametrize("name", ["sub/c1", "a\\b", "", "c\0"])
def test_layer_names_become_file_names(tmp_path, name):
    model = digits_net("mul")
    model.layers[1].name = name
    with pytest.raises(ModelFileError, match=r"layer 1 \(.*\) field 'name': must be a non-empty "
                       r"string without '.', '/', '\\' or NUL \(names become file names\)"):
        save_model(model, tmp_path / "m.npz")


@pytest.mark.parametrize("op", ["adder", "shift", "mul"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_layer_kind_loads_what_save_writes(tmp_path, case, op):
    # The loader refuses fields it does not know: every field the writer emits must be one.
    model = layer_case(case, op, mode="mul" if op == "mul" else "pow2x2")
    model.labels = [f"c{i}" for i in range(int(np.prod(model.shapes()[-1])))]
    save_model(model, tmp_path / "m.npz")
    assert [layer.name for layer in load_model(tmp_path / "m.npz").layers] == [
        layer.name for layer in model.layers]


def test_header_must_be_a_json_string(saved, tmp_path):
    with np.load(saved, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    text = str(arrays.pop("header"))
    # A member that is not an .npy array: np.load returns its raw bytes.
    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as archive:
        archive.writestr("header.npy", text.encode())
        for name, a in arrays.items():
            with archive.open(name + ".npy", "w") as member:
                np.lib.format.write_array(member, a)
    with pytest.raises(ModelFileError, match=r"raw.npz: header: must be a JSON string \(a 0-d unicode "
                                             r"array\), not raw bytes"):
        load_model(tmp_path / "raw.npz")
    for header, message in [(np.array([text]), r"not an array of dtype <U\d+ and shape \(1,\)"),
                            (np.array(text.encode()), r"not an array of dtype \|S\d+ and shape \(\)")]:
        np.savez(tmp_path / "m.npz", header=header, **arrays)
        with pytest.raises(ModelFileError, match=r"m.npz: header: must be a JSON string \(a 0-d "
                                                 r"unicode array\), " + message):
            load_model(tmp_path / "m.npz")
    # An integer of more digits than Python converts: valid JSON, but it cannot be read.
    np.savez(tmp_path / "m.npz", header=np.array(text.replace('"version": 1', '"version": 1' + "0" * 5000)),
             **arrays)
    with pytest.raises(ModelFileError, match=r"m.npz: header: cannot be read \(Exceeds the limit"):
        load_model(tmp_path / "m.npz")


def test_header_nested_too_deeply(saved):
    with np.load(saved, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["header"] = np.array('{"format": "addershift-qmodel", "version": 1, "input": '
                                + "[" * 100_000 + "]" * 100_000 + "}")
    np.savez(saved, **arrays)
    with pytest.raises(ModelFileError, match=r"m.npz: header: is nested too deeply"):
        load_model(saved)


def test_an_array_of_python_objects_is_named_as_such(saved):
    with np.load(saved, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["conv1.bias"] = np.array([1, "x", None], dtype=object)
    np.savez(saved, **arrays)
    with pytest.raises(ModelFileError, match=r"m.npz: array 'conv1.bias' holds Python objects "
                                             r"\(pickled\), not numbers; a model file's arrays "
                                             r"are integers$"):
        load_model(saved)


def test_other_files_are_not_model_files(saved, tmp_path):
    data, at = bytearray(saved.read_bytes()), saved.stat().st_size // 3
    data[at:at + 40] = bytes(b ^ 0xFF for b in data[at:at + 40])       # inside the deflate stream
    (tmp_path / "corrupt.npz").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"corrupt.npz: array '[\w.]+' cannot be read, the "
                                             r"file is truncated or corrupted \("):
        load_model(tmp_path / "corrupt.npz")
    # A member cut short (an archive rewritten with half of one array's bytes): named.
    with zipfile.ZipFile(saved) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content[:len(content) // 2] if name == "header.npy"
                             else content)
    with pytest.raises(ModelFileError, match=r"short.npz: array 'header' cannot be read, the file "
                                             r"is truncated or corrupted \(EOF"):
        load_model(tmp_path / "short.npz")
    (tmp_path / "cut.npz").write_bytes(saved.read_bytes()[:saved.stat().st_size // 2])
    with pytest.raises(ModelFileError, match=r"cut.npz: truncated or corrupted data \("):
        load_model(tmp_path / "cut.npz")
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    with pytest.raises(ModelFileError, match=r"a.npz: is a single .npy array, not an .npz model"):
        load_model(tmp_path / "a.npz")
    for content in (b"some text\n", pickle.dumps({"header": "x"})):
        (tmp_path / "b.npz").write_bytes(content)
        with pytest.raises(ModelFileError, match=r"b.npz: not a readable .npz archive \(not a zip "
                           r"file, so not an .npz model file\)"):
            load_model(tmp_path / "b.npz")
    with pytest.raises(ModelFileError, match=r"model file .*: is a folder, not a file"):
        load_model(tmp_path)


def test_a_failed_save_keeps_the_old_file(saved, monkeypatch):
    before = saved.read_bytes()

    def full_disk(f, **arrays):
        f.write(b"PK partial")
        raise OSError(27, "File too large")

    monkeypatch.setattr(np, "savez_compressed", full_disk)
    with pytest.raises(OSError, match="File too large"):
        save_model(digits_net("mul"), saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]   # no temporary file left
