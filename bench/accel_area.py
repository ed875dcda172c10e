"""Area of the whole accelerator (UART, framer and core) on an iCE40UP5K: Yosys counts and nextpnr.

Each build is ``hw.accelerator.AcceleratorTop`` for the digits network's needs (``max_k`` 72,
4096-word weight memory in SB_SPRAM256KA, 128-word activation banks, 64 parameter words),
synthesised with ``synth_ice40`` and placed with ``nextpnr-ice40 --up5k`` (pins unconstrained, 12
MHz). "LCs" is what nextpnr needs (a logic cell holds one LUT4, one flip-flop and one carry); a
build that does not fit reports the number nextpnr asked for.

    .venv/bin/python bench/accel_area.py                                   # the default list
    .venv/bin/python bench/accel_area.py --build adder:4x4:shift:1:nogap   # pe:RxC:mode:lanes[:nogap][:short]
    .venv/bin/python bench/accel_area.py --parts adder:4x4:pow2x2:4        # each component alone

``--parts`` synthesises each component of the build on its own (Yosys only, its ports as the
design's pins), to show where the cells go.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re

from addershift.boards.build import too_full
from addershift.boards.report import TARGETS, yosys_input_commands
from addershift.boards.toolchain import ToolError, prepare_environment, run_tool
from addershift.hw.accelerator import AcceleratorTop
from addershift.hw.config import ArrayConfig

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import out_dir, shape

DEFAULT_BUILDS = ("adder:4x4:pow2x2:4", "adder:4x4:pow2x2:1:nogap:short",
                  "adder:4x2:pow2x2:1:nogap:short", "adder:2x2:pow2x2:1:nogap:short",
                  "adder:2x2:shift:1:nogap:short")
UP5K_LCS = 5280


#: The flags a build spec may end with.
FLAGS = ("nogap", "short")
SPEC = "pe:RxC:mode:lanes[:nogap][:short]"


def parse(spec):
    """The ``ArrayConfig`` of a build spec (:data:`SPEC`); ``ValueError`` or ``TypeError`` with
    what is wrong."""
    parts = spec.split(":")
    if len(parts) < 4 or any(flag not in FLAGS for flag in parts[4:]):
        raise ValueError(f"a build is {SPEC}")
    pe, size, mode, lanes = parts[:4]
    try:
        rows, cols = shape(size)
    except argparse.ArgumentTypeError as e:
        raise ValueError(str(e)) from None
    if not lanes.isdigit():     # ArrayConfig checks the range
        raise ValueError(f"lanes must be an integer, not {lanes!r}")
    lanes = int(lanes)
    return ArrayConfig(pe=pe, rows=rows, cols=cols, requant_mode=mode, max_k=72,
                       weight_depth=4096, act_depth=128, param_depth=64, requant_lanes=lanes,
                       requant_pipeline="short" if "short" in parts[4:] else "deep",
                       writeback_pipeline="short" if "short" in parts[4:] else "deep",
                       read_pipeline="short" if "short" in parts[4:] else "deep",
                       global_pool="nogap" not in parts[4:])


def build_spec(text):
    """``--build`` and ``--parts``: a build spec whose ``ArrayConfig`` can be made."""
    try:
        parse(text)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    return text


def _write_script(d, *after_synth):
    """``top.ys`` in ``d``: read ``top.il``, keep the array's deliberate register copies (as board
    builds do), ``synth_ice40``, then ``after_synth``."""
    (d / "top.ys").write_text("\n".join(["read_rtlil top.il", *yosys_input_commands(),
                                         "synth_ice40 -top top", *after_synth]) + "\n")


def measure(spec, out):
    from amaranth.back import rtlil
    config = parse(spec)
    top = AcceleratorTop(config=config, clk_freq=12_000_000, baud=1_500_000)
    d = pathlib.Path(out) / spec.replace(":", "_")
    d.mkdir(parents=True, exist_ok=True)
    (d / "top.il").write_text(rtlil.convert(top, name="top", platform=TARGETS["ice40-up5k"]))
    _write_script(d, "tee -q -o stat.txt stat", "write_json top.json")
    run_tool("YOSYS", ["-q", "top.ys"], cwd=d, log_name="yosys.log")
    stat = (d / "stat.txt").read_text()
    cells = {k: int(v) for v, k in re.findall(r"^\s+(\d+)\s+(SB_\w+)", stat, re.M)}
    row = {"build": spec, "lut4": cells.get("SB_LUT4", 0), "carry": cells.get("SB_CARRY", 0),
           "ff": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
           "ebr": cells.get("SB_RAM40_4K", 0), "spram": cells.get("SB_SPRAM256KA", 0)}
    try:
        run_tool("NEXTPNR_ICE40", ["--up5k", "--package", "sg48", "--json", "top.json",
                                   "--pcf-allow-unconstrained", "--freq", "12", "--report",
                                   "report.json", "--timing-allow-fail"],
                 cwd=d, log_name="nextpnr.log")
        report = json.loads((d / "report.json").read_text())
        row["lcs"] = report["utilization"]["ICESTORM_LC"]["used"]
        row["fits"] = True
        row["fmax_mhz"] = min(v["achieved"] for v in report["fmax"].values())
    except ToolError:
        # nextpnr's utilisation report comes before placement fails; any other failure is the
        # tools', not a build that does not fit.
        log_text = (d / "nextpnr.log").read_text(errors="replace") \
            if (d / "nextpnr.log").exists() else ""
        if not too_full(log_text):
            raise
        need = re.search(r"ICESTORM_LC:\s*(\d+)/", log_text)
        row["lcs"] = int(need.group(1)) if need else None
        row["fits"] = False
        row["fmax_mhz"] = None
    return row


def _components(config):
    from addershift.hw.accelerator import Accelerator, accelerator_identity
    from addershift.hw.framer import Framer
    from addershift.hw.im2col import Im2colGenerator
    from addershift.hw.requant import PIPELINES, Requantiser
    from addershift.hw.sequencer import RequantFeeder, Sequencer
    from addershift.hw.writeback import Writeback
    core = Accelerator(config=config)
    core._MustUse__silence = True        # only asked for its array
    array = core.make_array()
    requant = Requantiser(mode=config.requant_mode, acc_bits=array.acc_bits,
                          out_bits=config.x_bits, lanes=config.lanes, bias_bits=config.bias_bits,
                          **PIPELINES[config.requant_pipeline])
    identity = accelerator_identity(config, clk_hz=12_000_000, baud=1_500_000, max_payload=256)
    return {
        "array": array, "requantiser": requant, "im2col": Im2colGenerator(config=config),
        "writeback": Writeback(config=config), "sequencer": Sequencer(config=config),
        "feeder": RequantFeeder(config=config, array_out_layout=array.out_layout,
                                requant_in_layout=requant.i.payload.shape()),
        "framer": Framer(identity=identity, timeout=240_000),
    }


def measure_parts(spec, out):
    from amaranth.back import rtlil
    rows = []
    for name, part in _components(parse(spec)).items():
        d = pathlib.Path(out) / (spec.replace(":", "_") + "_parts") / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "top.il").write_text(rtlil.convert(part, name="top", platform=TARGETS["ice40-up5k"]))
        _write_script(d, "tee -q -o stat.txt stat")
        try:
            run_tool("YOSYS", ["-q", "top.ys"], cwd=d, log_name="yosys.log")
        except ToolError as e:
            rows.append({"part": name, "error": str(e).splitlines()[0]})
            continue
        cells = {k: int(v) for v, k in re.findall(r"^\s+(\d+)\s+(SB_\w+)",
                                                  (d / "stat.txt").read_text(), re.M)}
        rows.append({"part": name, "lut4": cells.get("SB_LUT4", 0),
                     "carry": cells.get("SB_CARRY", 0),
                     "ff": sum(v for k, v in cells.items() if k.startswith("SB_DFF"))})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--build", action="append", type=build_spec, metavar="BUILD",
                        help="pe:RxC:mode:lanes[:nogap][:short]; repeatable (short: short "
                             "requantiser, write-back and read pipelines)")
    parser.add_argument("--parts", type=build_spec, metavar="BUILD",
                        help="synthesise BUILD's components one by one")
    parser.add_argument("--out", type=out_dir, default="build/accel_area",
                        help="folder for the tool runs")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    prepare_environment()
    if args.parts:
        parts = measure_parts(args.parts, args.out)
        if args.json:
            print(json.dumps({"build": args.parts, "parts": parts}))
            return
        print(f"components of {args.parts}, each synthesised alone (synth_ice40)\n")
        print(f"{'part':<14}{'LUT4':>6}{'carry':>7}{'FF':>6}")
        for p in parts:
            if "error" in p:
                print(f"{p['part']:<14} synthesis failed: {p['error']}")
            else:
                print(f"{p['part']:<14}{p['lut4']:>6}{p['carry']:>7}{p['ff']:>6}")
        return
    rows = [measure(spec, args.out) for spec in (args.build or DEFAULT_BUILDS)]
    if args.json:
        print(json.dumps({"device": "iCE40UP5K", "builds": rows}))
        return
    print(f"AcceleratorTop on iCE40UP5K ({UP5K_LCS} logic cells, 30 EBR, 4 SPRAM), 12 MHz target\n")
    print(f"{'build':<28}{'LUT4':>6}{'carry':>7}{'FF':>6}{'EBR':>5}{'SPRAM':>6}{'LCs':>7}"
          f"{'fits':>6}{'Fmax':>7}")
    for r in rows:
        fmax = f"{r['fmax_mhz']:.1f}" if r["fmax_mhz"] else "-"
        print(f"{r['build']:<28}{r['lut4']:>6}{r['carry']:>7}{r['ff']:>6}{r['ebr']:>5}"
              f"{r['spram']:>6}{r['lcs'] or '-':>7}{'yes' if r['fits'] else 'no':>6}{fmax:>7}")


if __name__ == "__main__":
    main()
