"""boards.outreg: the registers after ECP5 block RAMs and multipliers moved into them, on
netlists that Yosys' synth_ecp5 writes, and in board builds."""

import json
import re

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from addershift.boards import outreg
from addershift.boards.toolchain import prepare_environment, run_tool

# name -> (width, depth): one memory per case of `_Memories`.
CASES = {"free": (8, 512), "enabled": (8, 512), "loaded": (8, 512), "reset": (8, 512), "shared": (8, 512),
         "wide": (36, 512), "partial": (8, 512)}


class _Memories(wiring.Component):
    """One memory per case, each written and read through its own ports:

    - ``free``: a free-running register after the read port (moves, enable 1);
    - ``enabled``: a register enabled by a low ``hold`` (moves, OCE = ``hold`` inverted by a LUT);
    - ``loaded``: a register enabled by a high ``load`` (moves, OCE = ``load``);
    - ``reset``: a register with a reset (stays: the block RAM's reset acts differently);
    - ``shared``: the read port's word also feeds logic (stays);
    - ``wide``: 36 bits, one pseudo-dual-port block RAM that reads through DOA and DOB (moves);
    - ``partial``: only some bits registered, the others straight out (stays).
    """

    def __init__(self):
        members = {"waddr": In(9), "raddr": In(9), "wdata": In(36), "we": In(len(CASES)),
                   "re": In(1), "hold": In(1), "load": In(1)}
        members.update({f"q_{name}": Out(width) for name, (width, _) in CASES.items()})
        members["q_shared_xor"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        words = {}
        for i, (name, (width, depth)) in enumerate(CASES.items()):
            # As hw.memories reads: asynchronously, into a register that Yosys merges into the
            # block RAM's port (undefined collisions, so no bypass logic behind it).
            mem = m.submodules[f"mem_{name}"] = Memory(shape=unsigned(width), depth=depth, init=[],
                                                       attrs={"no_rw_check": 1})
            wp, rp = mem.write_port(), mem.read_port(domain="comb")
            m.d.comb += [wp.addr.eq(self.waddr), wp.data.eq(self.wdata[:width]),
                         wp.en.eq(self.we[i]), rp.addr.eq(self.raddr)]
            words[name] = Signal(width, name=f"word_{name}", reset_less=True)
            with m.If(self.re):
                m.d.sync += words[name].eq(rp.data)
        out = {name: Signal(len(word), name=f"out_{name}", reset_less=True)
               for name, word in words.items() if name != "reset"}
        m.d.sync += [out[name].eq(words[name]) for name in ("free", "shared", "wide")]
        with m.If(~self.hold):
            m.d.sync += out["enabled"].eq(words["enabled"])
        with m.If(self.load):
            m.d.sync += out["loaded"].eq(words["loaded"])
        m.d.sync += out["partial"][:4].eq(words["partial"][:4])
        m.d.comb += out["partial"][4:].eq(words["partial"][4:])
        with_reset = Signal(8, name="out_reset")          # not reset_less: the domain's reset
        m.d.sync += with_reset.eq(words["reset"])
        m.d.comb += [getattr(self, f"q_{name}").eq(sig) for name, sig in out.items()]
        m.d.comb += [self.q_reset.eq(with_reset), self.q_shared_xor.eq(words["shared"].xor())]
        return m


def _synth_ecp5(component, folder):
    """``component`` through synth_ecp5 in ``folder``, as Yosys' JSON."""
    prepare_environment()
    (folder / "top.il").write_text(rtlil.convert(component, name="top"))
    run_tool("YOSYS", ["-q", "-p", "read_rtlil top.il; synth_ecp5 -top top; write_json top.json"],
             cwd=folder, log_name="yosys.log")
    return json.loads((folder / "top.json").read_text())


@pytest.fixture(scope="module")
def netlist(tmp_path_factory):
    """``_Memories`` through synth_ecp5, as Yosys' JSON."""
    return _synth_ecp5(_Memories(), tmp_path_factory.mktemp("outreg"))


def _top(netlist):
    return next(m for m in netlist["modules"].values() if m.get("attributes", {}).get("top"))


def _brams(netlist, case):
    return [c for name, c in _top(netlist)["cells"].items()
            if c["type"] == "DP16KD" and name.startswith(f"mem_{case}.")]


def _flops(netlist):
    return sum(c["type"] == "TRELLIS_FF" for c in _top(netlist)["cells"].values())


def _driver(netlist, bit):
    for name, cell in _top(netlist)["cells"].items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) == "output" and bit in bits:
                return cell, port
    return None


def test_registers_move_into_the_block_rams(netlist):
    changed = json.loads(json.dumps(netlist))
    before = _flops(changed)
    ports, flops = outreg.absorb_output_registers(changed)
    # free 8, enabled 8, loaded 8, wide 36: four ports, one per memory.
    assert (ports, flops) == (4, 8 + 8 + 8 + 36)
    assert _flops(changed) == before - flops
    top = _top(changed)
    for case, regmodes in (("free", None), ("enabled", None), ("loaded", None),
                           ("wide", ("REGMODE_A", "REGMODE_B"))):
        (bram,) = _brams(changed, case)
        modes = {k: outreg._param(bram, k) for k in ("REGMODE_A", "REGMODE_B")}
        assert "OUTREG" in modes.values(), (case, modes)
        if regmodes:
            assert all(modes[k] == "OUTREG" for k in regmodes)
            assert bram["connections"]["OCEA"] == bram["connections"]["OCEB"] == ["1"]
    # Each output port of the component is now driven by a block RAM output.
    for case, width in (("free", 8), ("enabled", 8), ("loaded", 8), ("wide", 36)):
        bits = top["ports"][f"q_{case}"]["bits"]
        drivers = [_driver(changed, bit) for bit in bits]
        assert all(d is not None and d[0]["type"] == "DP16KD" and d[1].startswith("DO")
                   for d in drivers), case
    # The enabled register's enable is the output register's: the inverted `hold`.
    (bram,) = _brams(changed, "enabled")
    side = "A" if outreg._param(bram, "REGMODE_A") == "OUTREG" else "B"
    enable = bram["connections"][f"OCE{side}"][0]
    assert enable not in ("0", "1")
    inverter, _ = _driver(changed, enable)
    hold = top["ports"]["hold"]["bits"][0]
    assert inverter["type"] == "LUT4" and inverter["connections"]["A"] == [hold]
    assert int(inverter["parameters"]["INIT"], 2) == 0x5555          # Z = ~A
    (bram,) = _brams(changed, "loaded")
    side = "A" if outreg._param(bram, "REGMODE_A") == "OUTREG" else "B"
    assert bram["connections"][f"OCE{side}"] == top["ports"]["load"]["bits"]


@pytest.mark.parametrize("case", ["reset", "shared", "partial"])
def test_registers_that_cannot_move_stay(netlist, case):
    changed = json.loads(json.dumps(netlist))
    outreg.absorb_output_registers(changed)
    for bram in _brams(changed, case):
        assert {outreg._param(bram, k) for k in ("REGMODE_A", "REGMODE_B")} == {"NOREG"}


def test_a_second_pass_changes_nothing(netlist):
    changed = json.loads(json.dumps(netlist))
    outreg.absorb_output_registers(changed)
    assert outreg.absorb_output_registers(changed) == (0, 0)


def test_the_log_lines_read_back():
    line = outreg.OUTREG_LOG.format(flops=60, count=4)
    mults = outreg.MULTREG_LOG.format(flops=32, count=2)
    assert outreg.read_log(f"Info: x\n{line}\n{mults}\nmore") == (4, 60)
    assert outreg.read_log(f"Info: x\n{line}\n{mults}\nmore", outreg.MULTREG_LOG) == (2, 32)
    assert outreg.read_log("no such line") is None
    assert outreg.read_log(line, outreg.MULTREG_LOG) is None


def test_command_line(netlist, tmp_path, capsys):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(netlist))
    assert outreg.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert outreg.read_log(out) == (4, 60)
    assert outreg.read_log(out, outreg.MULTREG_LOG) == (0, 0)
    assert _flops(json.loads(path.read_text())) == _flops(netlist) - 60
    assert outreg.main([]) == 2


class _Multipliers(wiring.Component):
    """One signed 8x8 multiplier per case, its product into a register (as ``hw.pe.MulPE``'s
    term register):

    - ``free``: free-running (moves);
    - ``enabled``: enabled by a low ``hold`` (moves, CE0 = ``hold`` inverted by a LUT);
    - ``reset``: a register with a reset (stays);
    - ``shared``: the product also feeds logic (stays).
    """
    CASES = ("free", "enabled", "reset", "shared")

    def __init__(self):
        members = {"hold": In(1), "shared_xor": Out(1)}
        for name in self.CASES:
            members.update({f"a_{name}": In(signed(8)), f"b_{name}": In(signed(8)),
                            f"p_{name}": Out(signed(16))})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for name in self.CASES:
            product = Signal(signed(16), name=f"product_{name}")
            m.d.comb += product.eq(getattr(self, f"a_{name}") * getattr(self, f"b_{name}"))
            reg = Signal(signed(16), name=f"reg_{name}", reset_less=name != "reset")
            if name == "enabled":
                with m.If(~self.hold):
                    m.d.sync += reg.eq(product)
            else:
                m.d.sync += reg.eq(product)
            m.d.comb += getattr(self, f"p_{name}").eq(reg)
            if name == "shared":
                m.d.comb += self.shared_xor.eq(product.xor())
        return m


@pytest.fixture(scope="module")
def mult_netlist(tmp_path_factory):
    """``_Multipliers`` through synth_ecp5 (one MULT18X18D each), as Yosys' JSON."""
    return _synth_ecp5(_Multipliers(), tmp_path_factory.mktemp("multreg"))


def _mult(netlist, case):
    """The MULT18X18D that multiplies ``a_{case}`` and ``b_{case}``."""
    top = _top(netlist)
    operands = set(top["ports"][f"a_{case}"]["bits"])
    (cell,) = [c for c in top["cells"].values() if c["type"] == "MULT18X18D"
               and operands & {b for bits in c["connections"].values() for b in bits}]
    return cell


def test_registers_move_into_the_multipliers(mult_netlist):
    changed = json.loads(json.dumps(mult_netlist))
    before = _flops(changed)
    assert outreg.absorb_multiplier_registers(changed) == (2, 32)
    assert _flops(changed) == before - 32
    top = _top(changed)
    clock = top["ports"]["clk"]["bits"]
    for case in ("free", "enabled"):
        cell = _mult(changed, case)
        assert {k: outreg._param(cell, k) for k in ("REG_OUTPUT_CLK", "REG_OUTPUT_CE",
                                                    "REG_OUTPUT_RST")} == \
            {"REG_OUTPUT_CLK": "CLK0", "REG_OUTPUT_CE": "CE0", "REG_OUTPUT_RST": "RST0"}
        assert cell["connections"]["CLK0"] == clock and cell["connections"]["RST0"] == ["0"]
        # The product's port is driven by the multiplier itself now.
        drivers = [_driver(changed, bit) for bit in top["ports"][f"p_{case}"]["bits"]]
        assert all(d is not None and d[0] is cell and d[1].startswith("P") for d in drivers)
    assert _mult(changed, "free")["connections"]["CE0"] == ["1"]
    inverter, _ = _driver(changed, _mult(changed, "enabled")["connections"]["CE0"][0])
    assert inverter["type"] == "LUT4" and inverter["connections"]["A"] == top["ports"]["hold"]["bits"]
    for case in ("reset", "shared"):
        assert outreg._param(_mult(changed, case), "REG_OUTPUT_CLK", "NONE") == "NONE"
    # A second pass finds nothing left to move, and the block RAM pass leaves multipliers alone.
    assert outreg.absorb_multiplier_registers(changed) == (0, 0)
    assert outreg.absorb_output_registers(json.loads(json.dumps(mult_netlist))) == (0, 0)


class _RamCore(wiring.Component):
    """A board core with a block RAM: rx bits written at a counting address, the word read
    back at it into a register and then a free-running one, whose parity goes out on tx."""
    rx: In(1)
    tx: Out(1)
    status: Out(3)

    def elaborate(self, platform):
        m = Module()
        addr = Signal(9)
        word, out = Signal(8, reset_less=True), Signal(8, reset_less=True)
        mem = m.submodules.mem = Memory(shape=unsigned(8), depth=512, init=[],
                                        attrs={"no_rw_check": 1})
        wp, rp = mem.write_port(), mem.read_port(domain="comb")
        m.d.sync += addr.eq(addr + 1)
        m.d.comb += [wp.addr.eq(addr), wp.data.eq(Cat(self.rx, addr[:7])), wp.en.eq(self.rx),
                     rp.addr.eq(addr + 3), self.tx.eq(out.xor()), self.status.eq(out[:3])]
        with m.If(~self.rx):
            m.d.sync += word.eq(rp.data)
        m.d.sync += out.eq(word)
        return m


class _MulCore(wiring.Component):
    """A board core with a multiplier: two counters (one stepped by rx) multiplied into a
    register, whose parity goes out on tx through one more register."""
    rx: In(1)
    tx: Out(1)
    status: Out(3)

    def elaborate(self, platform):
        m = Module()
        a, b = Signal(signed(8)), Signal(signed(8))
        product, parity = Signal(signed(16), reset_less=True), Signal()
        m.d.sync += [a.eq(a + 1), b.eq(b + self.rx), product.eq(a * b),
                     parity.eq(product.as_unsigned().xor())]
        m.d.comb += [self.tx.eq(parity), self.status.eq(product[:3])]
        return m


@pytest.mark.parametrize("core, pattern, key, counts, line", [
    (_RamCore, r"REGMODE_[AB] OUTREG", "bram_outreg", {"ports": 1, "flip_flops": 8},
     "8 flip-flops moved into 1 block RAM output registers"),
    (_MulCore, r"REG_OUTPUT_CLK CLK0", "mult_outreg", {"multipliers": 1, "flip_flops": 16},
     "16 flip-flops moved into 1 multiplier output registers")])
def test_board_build_moves_the_register(tmp_path, core, pattern, key, counts, line):
    # The same core with and without the move: the register in the routed configuration, the
    # flip-flops out of the count, and nextpnr's timing of it (a block RAM's or multiplier's
    # path into one register is the whole design's slowest path, so the move shows in Fmax).
    from addershift.boards.build import build
    reports = {}
    for moved in (True, False):
        result = build(core(), board="ulx3s-12f", clock_mhz=25,
                       build_dir=tmp_path / str(moved), bram_outreg=moved)
        config = (tmp_path / str(moved) / "top.config").read_text()
        assert result.bitstream.exists()
        assert bool(re.search(pattern, config)) == moved
        reports[moved] = result.report
    assert reports[True].extra[key] == counts
    assert key not in reports[False].extra
    assert line in reports[True].format_text()
    assert reports[True].resources["ff"].used == \
        reports[False].resources["ff"].used - counts["flip_flops"]
    assert reports[True].fmax > reports[False].fmax


def test_every_block_ram_of_the_deep_accelerator_takes_its_register(tmp_path):
    # With the deep pipelines every block RAM read of the accelerator core goes into one
    # register without a reset (the activation buffers: a bank per row, and one that the
    # write-back and the host share), so every used read port gets its output register.
    from addershift.hw.accelerator import Accelerator
    from addershift.hw.config import ArrayConfig
    config = ArrayConfig(pe="adder", rows=2, cols=2, requant_mode="pow2x2", max_k=72,
                         weight_depth=2048, act_depth=512, param_depth=64)
    assert config.read_pipeline == config.writeback_pipeline == "deep"
    netlist = _synth_ecp5(Accelerator(config=config), tmp_path)
    outreg.absorb_output_registers(netlist)
    top = outreg._Top(netlist)
    ports = {}
    for name, cell in _top(netlist)["cells"].items():
        if cell["type"] == "DP16KD":
            for outputs, _, _, _, regmodes in outreg._groups(cell):
                if top.used_outputs(cell, outputs):
                    ports[name, regmodes[0]] = outreg._param(cell, regmodes[0])
    memories = {name.split(".")[0] for name, _ in ports}
    assert memories == {"act0", "act1", "wmem", "pmem", "perf"}
    assert sum(name.startswith("act0.") for name, _ in ports) == 3     # two rows' banks, one more
    assert set(ports.values()) == {"OUTREG"}, {k: v for k, v in ports.items() if v != "OUTREG"}
