"""The console script's refusals of files and options it cannot use: one line that names the
problem, before any work whose result would be lost, and no file left half written."""

import json
import os
import pathlib
import socket

import numpy as np
import pytest

from addershift.sw import cli
from addershift.sw.cli import main
from addershift.sw.examples import digits_net
from addershift.sw.golden import predict
from addershift.sw.model import save_model


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.npz"
    save_model(digits_net("adder", mode="pow2x2"), path)
    return str(path)


@pytest.fixture
def images(tmp_path):
    x = np.random.default_rng(0).integers(0, 128, (3, 1, 8, 8))
    np.save(tmp_path / "x.npy", x)
    return str(tmp_path / "x.npy"), x


def _error(capsys):
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("content,message", [
    (b"", "the file is empty"),
    (b"hello\n", "not an .npy array file"),
])
def test_unreadable_inputs(tmp_path, capsys, model_file, content, message):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(content)
    assert main(["predict", "-m", model_file, "-i", str(bad), "-o", str(tmp_path / "y.npy")]) == 1
    assert _error(capsys) == f"addershift predict: cannot read input {bad}: {message}"


def test_inputs_that_are_no_images(tmp_path, capsys, model_file):
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1, 8, 8), int))
    assert main(["predict", "-m", model_file, "-i", str(tmp_path / "x.npz"),
                 "-o", str(tmp_path / "y.npy")]) == 1
    assert _error(capsys).endswith("x.npz is an .npz archive, not one .npy array of images")
    np.save(tmp_path / "none.npy", np.zeros((0, 1, 8, 8), int))
    assert main(["predict", "-m", model_file, "-i", str(tmp_path / "none.npy"),
                 "-o", str(tmp_path / "y.npy")]) == 1
    assert _error(capsys).endswith("none.npy holds no images (shape (0, 1, 8, 8))")


def test_outputs_go_to_exactly_the_name_given(tmp_path, capsys, model_file, images):
    path, x = images
    out = tmp_path / "out.txt"            # np.save alone would write out.txt.npy
    assert main(["predict", "-m", model_file, "-i", path, "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), predict(digits_net("adder", mode="pow2x2"), x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "out.txt", "x.npy"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_outputs_that_cannot_be_written(tmp_path, capsys, model_file, images):
    path, _ = images
    (tmp_path / "folder.npy").mkdir()
    assert main(["predict", "-m", model_file, "-i", path, "-o", str(tmp_path / "folder.npy")]) == 1
    assert _error(capsys) == f"addershift predict: output {tmp_path / 'folder.npy'} is a folder, " \
                             f"not a file"
    missing = tmp_path / "no" / "y.npy"
    assert main(["predict", "-m", model_file, "-i", path, "-o", str(missing)]) == 1
    assert _error(capsys) == (f"addershift predict: cannot write output {missing}: No such file "
                              f"or directory")
    assert main(["predict", "-m", model_file, "-i", path, "-o", str(tmp_path / "y.npy"),
                 "--trace", path]) == 1
    assert _error(capsys) == f"addershift predict: --trace {path} is a file, not a folder"


def test_folders_that_are_files_are_named_with_their_option(tmp_path, capsys, model_file):
    # Before any simulator or build: the errno text that came later named no option.
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    before = sorted(tmp_path.iterdir())
    for argv, option, folder in [
            (["simulate", "-m", model_file, "--simulator", "icarus", "-n", "1"], "--build-dir",
             a_file),
            (["demo", "-n", "1"], "--out", a_file / "demo")]:
        assert main([*argv, option, str(folder)]) == 1
        why = ("is a file, not a folder" if folder == a_file
               else f"lies under {a_file}, a file, not a folder")
        assert _error(capsys) == f"addershift {argv[0]}: {option} {folder} {why}"
    assert a_file.read_text() == "keep" and sorted(tmp_path.iterdir()) == before


def test_a_failed_write_leaves_the_earlier_file_whole(tmp_path, monkeypatch):
    out = tmp_path / "y.npy"
    np.save(out, np.arange(5))

    def full_disk(f, y):
        f.write(b"\x93NUMPY")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        cli._save_array(out, np.arange(9))
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(out), np.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["y.npy"]


def test_training_output_checked_before_training(tmp_path, capsys):
    # Training takes minutes: a model it cannot write is refused first, not after.
    missing = tmp_path / "no" / "m.npz"
    assert main(["train", "-o", str(missing)]) == 1
    assert _error(capsys) == (f"addershift train: cannot write output {missing}: No such file or "
                              f"directory")
    assert main(["train", "-o", str(tmp_path / "m.npz"), "--save-float", str(tmp_path)]) == 1
    assert _error(capsys) == f"addershift train: --save-float {tmp_path} is a folder, not a file"
    same = tmp_path / "m.npz"        # the model would overwrite the checkpoint
    assert main(["train", "-o", str(same), "--save-float", str(same)]) == 1
    assert _error(capsys) == (f"addershift train: --save-float {same} is the model's output file "
                              f"too: the model would overwrite the checkpoint")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["--top", "bad name!"], "Module name must be a Verilog identifier (letters, digits, _; not a "
                             "digit first), not 'bad name!'"),
    (["--unit", "accelerator", "--top", "9lives"], "Module name must be a Verilog identifier "
                                                   "(letters, digits, _; not a digit first), not "
                                                   "'9lives'"),
    (["--unit", "accelerator", "--clock", "inf"],
     "--clock must be a positive number of MHz, not inf"),
    (["--unit", "accelerator", "--clock", "nan"],
     "--clock must be a positive number of MHz, not nan"),
    (["--unit", "pe", "--pe", "adder", "--p-max", "3"],
     "--p-min and --p-max are the shift exponents' range; --pe adder has none (its weights are "
     "--w-bits wide)"),
    (["--pe", "mul", "--p-min", "-2"],
     "--p-min and --p-max are the shift exponents' range; --pe mul has none (its weights are "
     "--w-bits wide)"),
])
def test_generate_options(tmp_path, capsys, argv, message):
    out = tmp_path / "x.v"
    assert main(["generate", "-o", str(out)] + argv) == 1
    assert _error(capsys) == f"addershift generate: {message}"
    assert not out.exists()


def test_the_most_rows_generate(tmp_path, capsys):
    # 64 rows: one activation memory of 65 banks (the write-back's and the rows').
    assert main(["generate", "--unit", "accelerator", "--rows", "64", "--cols", "1",
                 "-o", str(tmp_path / "a.v")]) == 0
    assert capsys.readouterr().out.startswith("64x1 adder accelerator")


def test_serve_sim_options(capsys, monkeypatch):
    monkeypatch.setattr("addershift.sim.board.serve", lambda *a, **k: pytest.fail("served"))
    assert main(["serve-sim", "--baud", "0"]) == 1
    assert _error(capsys) == "addershift serve-sim: --baud must be at least 1, not 0"
    assert main(["serve-sim", "--port", "99999"]) == 1
    assert _error(capsys) == ("addershift serve-sim: --port must be a TCP port, 0 to 65535, "
                              "not 99999")
    assert main(["serve-sim", "--link-test", "--mem-size", str(1 << 24)]) == 1
    assert _error(capsys) == ("addershift serve-sim: --mem-size must be 1 to 65536 bytes on the "
                              "simulated board, not 16777216")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve-sim", "--port", str(port), "--simulator", "amaranth"]) == 1
    assert _error(capsys) == (f"addershift serve-sim: cannot serve on port {port}: Address "
                              f"already in use")


def test_serve_sim_logs_go_to_stderr(capfd, monkeypatch):
    # The simulator's build and run logs (a child's writes to file descriptor 1) with the
    # command's own lines on stderr; stdout is the terminal's again afterwards.
    def serve(top, **kwargs):
        os.write(1, b"verilator: building\n")
        raise KeyboardInterrupt
    monkeypatch.setattr("addershift.sim.board.serve", serve)
    assert main(["serve-sim", "--port", "0", "--pe", "mul"]) == 0
    os.write(1, b"after\n")
    out, err = capfd.readouterr()
    assert out == "after\n"
    assert "starting the simulated board" in err and "verilator: building" in err


def test_flags_show_no_default(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = capsys.readouterr().out
    assert "(default: False)" not in help_text and "(default: golden)" in help_text
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    assert "(default: True)" not in capsys.readouterr().out


def test_simulate_counts_the_images_it_ran(capsys, monkeypatch):
    # The digits test split has 360 images: more asked for run 360, and the report says so.
    x = np.zeros((2, 1, 8, 8), int)
    monkeypatch.setattr("addershift.sim.accel_sim.test_images", lambda model, n: (x, [0, 1]))
    report = {"config": {"pe": "adder", "requant_mode": "pow2x2"}, "predictions": [0, 1],
              "golden_predictions": [0, 1], "stages": [], "cycles_per_inference": 9,
              "utilisation": 0.5, "ideal_cycles": 4, "mismatch": None}
    monkeypatch.setattr("addershift.sim.accel_sim.simulate_model", lambda *a, **k: dict(report))
    model = pathlib.Path(__file__).resolve().parents[2] / "models" / "digits_adder.npz"
    assert main(["simulate", "-m", str(model), "-n", "5"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == \
        "all 2 images bit-exact with the golden model (the test split has 2, not 5)"


class _Board:
    """What ``host.connect`` returns, for predict: ``load`` and ``predict`` raise the errors
    given (``None``: load succeeds)."""

    def __init__(self, *, load_error=None, predict_error=None):
        self.load_error, self.predict_error = load_error, predict_error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def load(self, model):
        if self.load_error:
            raise self.load_error

    def predict(self, images):
        raise self.predict_error


def test_a_link_lost_mid_predict_keeps_the_finished_outputs(tmp_path, capsys, monkeypatch,
                                                            model_file, images):
    from addershift.sw.driver import LinkError
    path, x = images
    finished = predict(digits_net("adder", mode="pow2x2"), x[:2])
    lost = LinkError("the board at socket://x disconnected; 2 of 3 images finished")
    lost.done_outputs = finished
    monkeypatch.setattr("addershift.sw.host.connect",
                        lambda url, **options: _Board(predict_error=lost))
    out = tmp_path / "y.npy"
    assert main(["predict", "-m", model_file, "-i", path, "-o", str(out),
                 "--backend", "socket://x"]) == 1
    partial = tmp_path / "y.partial.npy"
    assert _error(capsys) == ("addershift predict: the board at socket://x disconnected; 2 of 3 "
                              f"images finished; the outputs of those 2 are in {partial}")
    np.testing.assert_array_equal(np.load(partial), finished)
    assert not out.exists()


def test_a_slow_simulated_board_is_waited_for_with_timeout(tmp_path, capsys, monkeypatch,
                                                           model_file, images):
    # A simulated board on Icarus (or a loaded machine) answers slowly: the error says how to
    # wait longer, and --timeout reaches the driver.
    from addershift.sw.driver import LinkTimeout
    path, _ = images
    seen = []
    silent = LinkTimeout("the board at socket://x did not accept IDENTIFY after 5 attempts "
                         "(last: no answer for 8 s)")
    monkeypatch.setattr("addershift.sw.host.connect",
                        lambda url, timeout=None: seen.append(timeout) or _Board(load_error=silent))
    argv = ["predict", "-m", model_file, "-i", path, "-o", str(tmp_path / "y.npy"),
            "--backend", "socket://x"]
    assert main(argv) == 1
    assert _error(capsys) == (
        "addershift predict: the board at socket://x did not accept IDENTIFY after 5 attempts "
        "(last: no answer for 8 s) (a simulated board on Icarus or on a loaded machine answers "
        "slowly: a longer --timeout waits for it)")
    assert main(argv + ["--timeout", "30"]) == 1 and seen == [None, 30.0]
    capsys.readouterr()
    # Late answers colliding with the requests sent again fail their CRC: a LinkError, but the
    # last attempt still got no answer in time.
    from addershift.sw.driver import LinkError
    garbled = LinkError("the board at socket://x did not accept IDENTIFY after 5 attempts (last: "
                        "no answer for 8 s); 1 answer failed the CRC or framing check")
    garbled.waited_out = True
    monkeypatch.setattr("addershift.sw.host.connect",
                        lambda url, timeout=None: _Board(load_error=garbled))
    assert main(argv) == 1 and _error(capsys).endswith("a longer --timeout waits for it)")
    for command in (argv, ["run", "--port", "socket://x", "-m", model_file]):
        assert main(command + ["--timeout", "0"]) == 1
        assert _error(capsys).endswith(": --timeout must be a number of seconds above 0, not 0")


@pytest.mark.parametrize("simulator, timeout", [("verilator", 8.0), ("icarus", 60.0),
                                                ("amaranth", 120.0)])
def test_run_on_a_simulated_board_waits_as_long_as_its_simulator_needs(capsys, monkeypatch,
                                                                       model_file, simulator,
                                                                       timeout):
    seen = {}

    class Board:
        url = "socket://127.0.0.1:1"

        def __init__(self, **options):
            seen["simulator"] = options["simulator"]

        def stop(self):
            pass

    def run_model(url, model, count, **options):
        seen["timeout"] = options["timeout"]
        raise RuntimeError("stop here")
    monkeypatch.setattr("addershift.sim.board.BoardProcess", Board)
    monkeypatch.setattr("addershift.sw.host.run_model", run_model)
    assert main(["run", "--sim", "--simulator", simulator, "-m", model_file]) == 1
    assert seen == {"simulator": simulator, "timeout": timeout}
    assert main(["run", "--sim", "--simulator", simulator, "-m", model_file,
                 "--timeout", "5"]) == 1
    assert seen["timeout"] == 5.0


def test_demo_checks_its_image_count(capsys):
    assert main(["demo", "-n", "0"]) == 1
    assert _error(capsys) == "addershift demo: --images must be at least 1, not 0"


@pytest.mark.parametrize("pe", ["adder", "mul"])
def test_variant_ps_is_for_shift_networks_only(tmp_path, capsys, pe):
    # DeepShift-PS is a shift network's variant: for other kinds it would only have changed
    # their training settings (60 epochs at lr 0.1), silently.
    from addershift.sw.train import default_config
    assert main(["train", "--pe", pe, "--variant", "ps", "-o", str(tmp_path / "m.npz")]) == 1
    assert _error(capsys) == "addershift train: --variant ps is DeepShift's, for --pe shift only"
    assert list(tmp_path.iterdir()) == []
    assert default_config(pe, variant="ps").epochs == default_config(pe).epochs == 30
    assert default_config(pe, variant="ps").lr == default_config(pe).lr
    assert (default_config("shift", variant="ps").epochs, default_config("shift", variant="ps").lr) \
        == (60, 0.1)


_FLAT_FIRST = [{"kind": "flatten", "name": "f0"}]


@pytest.mark.parametrize("shape, layers, message", [
    (64, [], "'input_shape' must be a list of positive integers, not 64"),
    ([1, 8, 8], _FLAT_FIRST, "layer 1 ('conv1'): a conv2d layer needs a (C, H, W) input, not (64,)"),
    ([1, 8, 8], "no flatten", "layer 6 ('fc'): a linear layer needs a flat (features,) input, not "
                              "(16, 2, 2) (a flatten layer before it makes one)"),
])
def test_import_refuses_an_architecture_whose_shapes_do_not_chain(tmp_path, capsys, shape, layers,
                                                                  message):
    # Refused when the architecture is read, before the checkpoint (here none) is.
    from addershift.sw.train import digits_spec
    spec = digits_spec()
    spec = ([e for e in spec if e["kind"] != "flatten"] if layers == "no flatten"
            else layers + spec)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"input_shape": shape, "layers": spec}))
    assert main(["import", str(tmp_path / "none.pt"), "--format", "float", "--arch", str(arch),
                 "-o", str(tmp_path / "m.npz")]) == 1
    assert _error(capsys) == f"addershift import: architecture {arch}: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json"]


def test_quantize_refuses_a_checkpoint_whose_shapes_do_not_chain(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from addershift.sw.importers import save_float_checkpoint
    from addershift.sw.train import FloatNet, digits_spec
    save_float_checkpoint(FloatNet(digits_spec(), (1, 8, 8), pe="mul"), tmp_path / "f.pt")
    obj = torch.load(tmp_path / "f.pt", weights_only=True)
    obj["spec"] = _FLAT_FIRST + obj["spec"]           # (was an IndexError)
    torch.save(obj, tmp_path / "f.pt")
    assert main(["quantize", str(tmp_path / "f.pt"), "-o", str(tmp_path / "m.npz")]) == 1
    assert _error(capsys) == (f"addershift quantize: checkpoint {tmp_path / 'f.pt'}: layer 1 "
                              f"('conv1'): a conv2d layer needs a (C, H, W) input, not (64,)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pt"]


def test_quantize_calibrates_on_the_checkpoints_own_data_set(tmp_path, capsys):
    # A checkpoint trained on an IDX folder of 8x8 images (the digits' size): quantize without
    # --dataset calibrates and measures on that folder, not silently on digits.
    pytest.importorskip("torch")
    from addershift.sw.importers import save_float_checkpoint
    from addershift.sw.train import FloatNet, digits_spec
    from addershift.sw.data import IDX_FILES
    rng = np.random.default_rng(0)
    (tmp_path / "idx").mkdir()
    for key, stem in IDX_FILES.items():
        n = 30 if key.startswith("train") else 7
        a = rng.integers(0, 256 if key.endswith("images") else 10,
                         (n, 8, 8) if key.endswith("images") else (n,)).astype(np.uint8)
        (tmp_path / "idx" / stem).write_bytes(bytes([0, 0, 8, a.ndim]) + b"".join(
            d.to_bytes(4, "big") for d in a.shape) + a.tobytes())
    save_float_checkpoint(FloatNet(digits_spec(), (1, 8, 8), pe="mul"), tmp_path / "f.pt",
                          dataset=tmp_path / "idx")
    assert main(["quantize", str(tmp_path / "f.pt"), "--qat-epochs", "0", "-o",
                 str(tmp_path / "m.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test_images"] == 7, report
