"""Where a whole accelerator's cells go, module by module: Yosys counts per component.

The accelerator top (UART, framer, core) of the build the CLI would make (``-m MODEL`` and the
build options of ``addershift build``) is synthesised with its components kept apart (Yosys
``keep_hierarchy`` on the top's and the core's submodules; the PEs stay inside the array). The
core's own row is the read stage (word registers, lane selects, the buffer select) and the host
access. LUTs are mapped with classic ABC (``abc -lut 4``; on ECP5 as
``boards.report.ecp5_classic_abc``): YoWASP's ABC9 exits on the unflattened netlists. "comb" is what the logic takes of the device's
LUT4 sites (ECP5: ``LUT4 + 2 x CCU2C``; iCE40: LUT4, carries apart). These are shares, not a
build's totals: nextpnr adds LUTs (ECP5: about one per eight flip-flops of the 32x32 accelerator)
and ABC9 maps a little differently.

    .venv/bin/python bench/module_area.py -m models/digits_adder.npz --rows 32 --cols 32 \\
        --act-banks 4 --requant-lanes 8
    .venv/bin/python bench/module_area.py --family ice40 --rows 4 --cols 2 --requant-lanes 1
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re

from addershift.boards.report import TARGETS, ecp5_classic_abc, yosys_input_commands
from addershift.boards.toolchain import prepare_environment, run_tool
from addershift.hw.accelerator import AcceleratorTop
from addershift.hw.config import ArrayConfig

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import out_dir, positive_int

FAMILIES = ("ecp5", "ice40")
_CELLS = {"ecp5": {"lut4": ["LUT4"], "carry": ["CCU2C"], "ff": ["TRELLIS_FF"],
                   "bram": ["DP16KD"], "lutram": ["TRELLIS_DPR16X4"]},
          "ice40": {"lut4": ["SB_LUT4"], "carry": ["SB_CARRY"], "ff": ["SB_DFF"],
                    "bram": ["SB_RAM40_4K"], "spram": ["SB_SPRAM256KA"]}}


def config_of(args, model=None):
    """The ArrayConfig ``addershift build`` makes of the same options (``model``: ``-m``'s,
    loaded; read from the file when not given)."""
    options = {"requant_lanes": args.requant_lanes, "act_banks": args.act_banks,
               "act_entry_lanes": args.act_entry_lanes, "weight_relays": args.weight_relays,
               "requant_pipeline": args.requant_pipeline,
               "writeback_pipeline": args.writeback_pipeline,
               "read_pipeline": args.read_pipeline}
    options.update({name: getattr(args, name) for name in ("weight_depth", "act_depth",
                                                           "param_depth", "counter_bits")
                    if getattr(args, name) is not None})
    if args.model:
        from addershift.sw.compiler import default_config
        from addershift.sw.model import load_model
        model = load_model(args.model) if model is None else model
        return default_config(model, rows=args.rows, cols=args.cols, **options)
    return ArrayConfig(pe=args.pe, rows=args.rows, cols=args.cols,
                       requant_mode="mul" if args.pe == "mul" else "pow2x2", **options)


def components(rtlil_text):
    """The modules kept apart: the top's submodules and the core's (``top.X``, ``top.core.X``)."""
    names = re.findall(r"^module \\(\S+)$", rtlil_text, re.M)
    return [n for n in names if re.fullmatch(r"top\.[^.]+|top\.core\.[^.]+", n)]


def parse_stat(text, family):
    """``{module: {kind: count}}`` from Yosys' ``stat`` text (kinds of :data:`_CELLS`)."""
    rows = {}
    for block in re.split(r"^=== ", text, flags=re.M)[1:]:
        name = block.split(" ===", 1)[0].strip()
        if name == "design hierarchy":
            name = "total"
        counts = {t: int(n) for n, t in re.findall(r"^\s+(\d+)\s+(\S+)\s*$", block, re.M)}
        rows[name] = {kind: sum(n for t, n in counts.items()
                                if any(t.startswith(p) for p in prefixes))
                      for kind, prefixes in _CELLS[family].items()}
    return rows


def measure(config, family, out):
    from amaranth.back import rtlil
    top = AcceleratorTop(config=config, clk_freq=100_000_000, baud=1_000_000)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # The target as the platform: the core picks primitives by its device, as on the board
    # (weights in SB_SPRAM256KA on iCE40, the adder PEs' carry cells on ECP5).
    target = TARGETS["ice40-up5k" if family == "ice40" else "ecp5-85f"]
    text = rtlil.convert(top, name="top", platform=target)
    (out / "top.il").write_text(text)
    keep = " ".join(components(text))
    if family == "ecp5":
        opts, mapping = ecp5_classic_abc(("-nowidelut",), "top")
        synth = [f"synth_ecp5 {' '.join(opts)} -top top", *mapping]
    else:
        # synth_ice40's own map_luts step with classic ABC in place of abc9.
        synth = ["synth_ice40 -top top -run begin:map_luts", "techmap -map +/ice40/latches_map.v",
                 "abc -dress -lut 4", "ice40_wrapcarry -unwrap", "techmap -map +/ice40/ff_map.v",
                 "clean", "opt_lut -tech ice40", "synth_ice40 -top top -run map_cells:"]
    script = ["read_rtlil top.il", *yosys_input_commands(), "hierarchy -top top",
              f"setattr -mod -set keep_hierarchy 1 {keep}", *synth, "tee -q -o stat.txt stat"]
    (out / "top.ys").write_text("\n".join(script) + "\n")
    run_tool("YOSYS", ["-q", "top.ys"], cwd=out, log_name="yosys.log")
    rows = parse_stat((out / "stat.txt").read_text(), family)
    for row in rows.values():
        row["comb"] = row["lut4"] + (2 * row["carry"] if family == "ecp5" else 0)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--family", choices=FAMILIES, default="ecp5")
    parser.add_argument("-m", "--model", help="size the build for this model (as the CLI does)")
    parser.add_argument("--pe", choices=("adder", "shift", "mul"), default="adder")
    # Counts of at least 1 here; ArrayConfig checks the rest (ranges, divisors).
    parser.add_argument("-r", "--rows", type=positive_int, default=4)
    parser.add_argument("-c", "--cols", type=positive_int, default=4)
    parser.add_argument("--act-banks", type=positive_int)
    parser.add_argument("--requant-lanes", type=positive_int)
    parser.add_argument("--act-entry-lanes", type=positive_int,
                        help="narrow banks of this many lanes per entry (addershift build's)")
    parser.add_argument("--weight-relays", type=positive_int,
                        help="the weight memory's relay registers (addershift build's)")
    for memory in ("weight", "act", "param"):
        parser.add_argument(f"--{memory}-depth", type=positive_int,
                            help="words (default: as the CLI)")
    for part in ("requant", "writeback", "read"):
        parser.add_argument(f"--{part}-pipeline", choices=("deep", "short"), default="deep")
    parser.add_argument("--counter-bits", type=positive_int,
                        help="the performance counters' width (default: ArrayConfig's, 32)")
    parser.add_argument("--out", type=out_dir, default="build/module_area",
                        help="folder for the Yosys run")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    model = None
    if args.model:
        from addershift.sw.model import load_model
        try:
            model = load_model(args.model)
        except ValueError as e:                 # ModelFileError is one: a missing file too
            parser.error(f"argument -m/--model: {e}")
    try:
        config = config_of(args, model)
    except (TypeError, ValueError) as e:      # a bad build option, or a model no build takes
        parser.error(str(e))
    prepare_environment()
    rows = measure(config, args.family, args.out)
    if args.json:
        print(json.dumps({"family": args.family, "build": config.to_dict(), "modules": rows}))
        return
    total = rows.pop("total")
    narrow = (f", narrow banks of {config.act_entry_lanes} lanes" if config.narrow_banks
              else "")
    print(f"{config.pe.value} accelerator {config.rows}x{config.cols}, act_banks "
          f"{config.banks}{narrow}, {config.lanes} requantiser lanes ({args.family}, Yosys per "
          f"module)\n")
    memories = ("bram", "spram") if args.family == "ice40" else ("bram",)
    print(f"{'module':<22}{'comb':>8}{'LUT4':>8}{'carry':>7}{'FF':>8}"
          + "".join(f"{kind.upper():>7}" for kind in memories) + f"{'comb %':>8}")

    def line(name, r, share=""):
        print(f"{name:<22}{r['comb']:>8}{r['lut4']:>8}{r['carry']:>7}{r['ff']:>8}"
              + "".join(f"{r[kind]:>7}" for kind in memories) + share)

    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["comb"]):
        if any(r[kind] for kind in ("comb", "ff", *memories)):
            line(name.removeprefix("top."), r, f"{100 * r['comb'] / max(1, total['comb']):>7.1f}%")
    line("total", total)


if __name__ == "__main__":
    main()
