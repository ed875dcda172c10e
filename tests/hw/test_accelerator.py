"""The accelerator core, bit-exact against the golden model, stage by stage.

Amaranth simulator: every layer case (conv stride/padding variants, pointwise conv, pooling, global
average pooling, linear chains) for every PE kind, each requantisation mode on every PE kind, with
the per-stage counters checked against the program, through both write-back pipelines, with rows
sharing activation banks (and their stall bounds), with narrow banks (and their stalls: the
replicated read's; 4-bit activations at the least entry width), with weight relays (each stage
a cycle longer), and with an array of several tiles.
Verilator: the digits network for adder and shift (mul `slow`), an image in one run and one
stage by stage; Icarus: each PE kind too, and every layer case for each PE kind (shared and narrow banks on both simulators, the narrow banks written
from a port per row).
The longest reduction (max_k) with inputs of -128 and weights at both ends of their range:
accumulators at both ends, requantisation saturating both ways (Amaranth and Icarus for each PE
kind, Verilator for adder); a global average pool of signed sums, every shift from 0 (saturating)
to 40, through both write-backs (Amaranth; Icarus for one).
All three simulators, stage by stage: steps the array stalls keep their weights (two words held,
three with weight relays); the read stages' registered copies of their advance equal it in
every cycle (Amaranth). A run keeps the stage count it was started with when the run argument
changes under it. Memories whose reads of an address written in the same cycle are undefined
return a wrong word then (``poisoned_collisions``), and no user of them takes it: the
write-back's max-pool reads, the host's reads of the counters, the rows' reads of narrow banks
behind their copy.
"""

import numpy as np
import pytest

from addershift.hw import accelerator as accelerator_module
from addershift.hw.config import ArrayConfig
from addershift.sim.accel_host import run_stages
from addershift.sim.accel_sim import (SimResult, _AmaranthPort, _decode, check, simulate,
                                      simulate_batch)
from addershift.sw.compiler import compile_model
from addershift.sw.golden import trace
from addershift.sw.examples import digits_net
from addershift.sw.layer_cases import CASES, layer_case

OPS = ("adder", "shift", "mul")
MODES = ("shift", "pow2x2", "mul")


def _images(model, count, seed):
    return np.random.default_rng(seed).integers(0, 128, (count,) + tuple(model.input_shape))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
def test_layer_cases_amaranth(op, mode):
    # Over the three modes of one PE kind every case runs once; over the three PE kinds every
    # case meets every mode.
    i, j = OPS.index(op), MODES.index(mode)
    cases = [name for c, name in enumerate(sorted(CASES)) if (c + i) % 3 == j]
    # The requantiser takes 4, 2 or 1 values per cycle, through either pipeline; the write-back
    # and the reads through either of their own; every case once with the three rows sharing
    # one activation bank.
    config = ArrayConfig(pe=op, rows=3, cols=4, requant_mode=mode, max_k=128, weight_depth=512,
                         act_depth=128, param_depth=64, requant_lanes=4 >> j,
                         requant_pipeline=("deep", "short")[(i + j) % 2],
                         writeback_pipeline="short" if (i + j) % 3 == 2 else "deep",
                         read_pipeline=("deep", "short")[j % 2],
                         act_banks=1 if (i + j) % 3 == 1 else None, global_pool="gap" in cases)
    jobs = []
    for n, name in enumerate(cases):
        model = layer_case(name, op, mode=mode, seed=n)
        jobs.append((model, compile_model(model, config), _images(model, 1, seed=n)))
    results = simulate_batch([(p, x) for _, p, x in jobs], simulator="amaranth", per_stage=True)
    for (model, program, x), result, name in zip(jobs, results, cases):
        assert check(model, program, x, result) is None, name
        assert len(result.outputs[0]) == len(program.stages)
        for stage, counts in zip(program.stages, result.stage_counts(0)):
            assert counts["issue"] == stage.issue_cycles, (name, stage.name)
            assert counts["busy_pe"] == stage.busy_pe_cycles, (name, stage.name)
            assert counts["cycles"] >= counts["issue"] + counts["stall"]


@pytest.mark.cocotb
@pytest.mark.parametrize("op, simulator, pipeline", [
    *((op, "icarus", "deep") for op in OPS), ("shift", "icarus", "short"),
    ("adder", "verilator", "short")])
def test_layer_cases_on_verilog(op, simulator, pipeline, tmp_path):
    # The im2col generator's strides, paddings (2 included), rectangular and pointwise kernels,
    # pooling (global average too) and linear chains as Verilog: every case in one build per PE
    # kind, each stage's output compared (the digits network alone has stride 1, padding 1 and
    # 3x3 kernels); with the deep pipelines and the short ones (the iCEBreaker's), on Icarus
    # and (one build: a minute of C++) on Verilator.
    mode = "mul" if op == "mul" else "pow2x2"
    config = ArrayConfig(pe=op, rows=3, cols=4, requant_mode=mode, max_k=128, weight_depth=512,
                         act_depth=128, param_depth=64, global_pool=True,
                         requant_pipeline=pipeline, writeback_pipeline=pipeline,
                         read_pipeline=pipeline, requant_lanes=1 if pipeline == "short" else None)
    jobs = []
    for n, name in enumerate(sorted(CASES)):
        model = layer_case(name, op, mode=mode, seed=n)
        jobs.append((model, compile_model(model, config), _images(model, 1, seed=n)))
    results = simulate_batch([(p, x) for _, p, x in jobs], simulator=simulator, per_stage=True,
                             build_dir=tmp_path)
    for (model, program, x), result, name in zip(jobs, results, sorted(CASES)):
        assert check(model, program, x, result) is None, name


@pytest.mark.parametrize("lanes, writeback", [(1, "deep"), (2, "deep"), (4, "deep"), (2, "short")])
def test_global_pool_sums_restart_for_each_group_of_channels(lanes, writeback):
    # Six channels on four columns: two groups, whose lane 0 sums channels 0 and 4. With these
    # data channel 0's mean is large and channel 4's zero, so a sum carried over from the first
    # group shows. (The write-back's walk moves to its next position between rows when a row
    # takes several transfers, lanes < cols: a restart missed there fails here.)
    model = layer_case("gap", "shift", mode="shift", seed=2)
    x = _images(model, 1, seed=2)
    gap = next(n for n, layer in enumerate(model.layers) if layer.name == "gap")
    means = trace(model, x)[gap][0].ravel()
    assert means[0] > 100 and means[4] == 0
    config = ArrayConfig(pe="shift", rows=3, cols=4, requant_mode="shift", max_k=128,
                         weight_depth=512, act_depth=128, param_depth=64, requant_lanes=lanes,
                         writeback_pipeline=writeback, global_pool=True)
    program = compile_model(model, config)
    result = simulate(program, x, simulator="amaranth", per_stage=True)
    assert check(model, program, x, result) is None


def test_a_mismatch_names_the_first_layer():
    model = layer_case("linear_chain", "mul")
    config = ArrayConfig(pe="mul", rows=2, cols=2, max_k=128, weight_depth=256, act_depth=64,
                         param_depth=32)
    program = compile_model(model, config)
    # Corrupt the first weight word of fc2: fc1 still matches, fc2 does not.
    program.weight_words[program.stages[1].w_base] ^= 0x7F
    x = _images(model, 1, seed=0)
    result = simulate(program, x, simulator="amaranth", per_stage=True)
    mismatch = check(model, program, x, result)
    assert mismatch is not None and mismatch.layer == "fc2" and mismatch.image == 0
    assert str(mismatch).startswith("image 0: layer fc2 (stage fc2) differs first at index [")


def test_a_batch_mixes_whole_runs_and_stage_by_stage_ones():
    model = layer_case("linear_chain", "adder")
    config = ArrayConfig(pe="adder", rows=2, cols=2, max_k=128, weight_depth=256, act_depth=64,
                         param_depth=32)
    program = compile_model(model, config)
    x = _images(model, 2, seed=5)
    whole, staged = simulate_batch([(program, x[:1]), (program, x[1:])], simulator="amaranth",
                                   per_stage=[False, True])
    n = len(program.stages)
    assert n > 1 and len(whole.counters[0]) == 1 and len(staged.counters[0]) == n
    assert list(whole.outputs[0]) == [n - 1] and list(staged.outputs[0]) == list(range(n))
    assert check(model, program, x[:1], whole) is None
    assert check(model, program, x[1:], staged) is None
    for bad in ([True], [False, True, False], [0, 1]):
        with pytest.raises(ValueError, match="per_stage must be a bool or one bool per job"):
            simulate_batch([(program, x[:1]), (program, x[1:])], per_stage=bad)


def test_run_without_a_program_reports_an_error():
    from amaranth.sim import Simulator
    from addershift.hw.accelerator import Accelerator
    dut = Accelerator(config=ArrayConfig(pe="adder", rows=1, cols=1, max_k=16, weight_depth=64,
                                         act_depth=16, param_depth=16))
    seen = {}

    async def bench(ctx):
        port = _AmaranthPort(ctx, dut)
        seen["error"] = await run_stages(port)
        seen["busy"] = port.get("bus__busy")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {"error": 1, "busy": 0}


def test_a_run_keeps_the_stage_count_it_was_started_with():
    # The framer's run argument is its address register, which the next request's payload
    # overwrites while the run goes on: the sequencer must take the count with the strobe.
    from amaranth.sim import Simulator
    from addershift.hw.accelerator import Accelerator
    from addershift.sim.accel_host import read_counters, write_bytes
    model = digits_net("adder", mode="pow2x2")
    config = ArrayConfig(pe="adder", rows=2, cols=2, requant_mode="pow2x2", max_k=72,
                         weight_depth=2048, act_depth=64, param_depth=64)
    program = compile_model(model, config)
    dut = Accelerator(config=config)
    seen = {}

    async def bench(ctx):
        port = _AmaranthPort(ctx, dut)
        for region, data in program.images().items():
            await write_bytes(port, region, 0, data)
        await write_bytes(port, "act0", 0, program.input_image(_images(model, 1, seed=2)[0]))
        port.set("bus__run_arg", 0 | 1 << 8)      # stage 0 alone
        port.set("bus__run", 1)
        await port.tick()
        port.set("bus__run", 0)
        port.set("bus__run_arg", 0)               # "up to the last stage", now
        for _ in range(100_000):                  # a whole inference takes about 6,000
            await port.tick()
            if port.get("bus__done"):
                break
        seen["error"] = port.get("bus__error")
        seen["stages run"] = sum(any(c.values()) for c in await read_counters(port, program, 2))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {"error": 0, "stages run": 1}


@pytest.mark.parametrize("simulator", ["amaranth",
                                       pytest.param("verilator", marks=pytest.mark.cocotb),
                                       pytest.param("icarus", marks=pytest.mark.cocotb)])
@pytest.mark.parametrize("relays", [None, 2])
def test_stalled_steps_keep_their_weights(simulator, relays, tmp_path):
    # One requantiser lane: a tile's 16 results take 16 cycles against conv1's K + 1 = 10, so
    # the array stalls last steps while the registered weight memory delivers the next two
    # steps' words (three with relays); the read stage must keep them until their steps issue,
    # and the generator's step that meets the stall in its skid register. (Fails on conv1 with
    # a word fewer kept, or the skid's step not offered first; a whole inference alone can hide
    # it: small errors vanish in the requantisers.)
    model = digits_net("adder", mode="pow2x2")
    config = ArrayConfig(pe="adder", rows=4, cols=4, requant_mode="pow2x2", max_k=72,
                         weight_depth=2048, act_depth=64, param_depth=64, requant_lanes=1,
                         weight_relays=relays)
    assert config.weight_read_latency == (4 if relays else 3)
    program = compile_model(model, config)
    x = _images(model, 1, seed=3)
    result = simulate(program, x, simulator=simulator, per_stage=True, build_dir=tmp_path)
    assert check(model, program, x, result) is None


@pytest.mark.parametrize("rows, cols, act_banks, relays, case",
                         [(4, 4, None, 2, None), (8, 8, 2, None, None), (8, 8, 4, 1, None),
                          (4, 4, None, None, "pointwise")])
def test_registered_copies_equal_their_originals_every_cycle(rows, cols, act_banks, relays, case,
                                                             monkeypatch):
    # The deep read stages' per-row copies of `adv`, each column's copies of the held
    # weights' `take`, and the issued step's skid's copies of `held` (one per row and column)
    # and the skid's register of the array's `i.ready` are registers loaded with next-cycle
    # values the core derives; through a run whose array stalls (as above; the shared banks'
    # reads stall on 8x8 arrays, where a tile's 64 results drain slower than its steps issue)
    # each must equal its original in every cycle, and the generator's ready (with a bank per
    # row) must be what it was given as the next cycle's. A pointwise layer's tiles are two
    # steps long, so as the skid lets a held `last` step go, the step offered next (the last
    # stage's, which stays) and the one entering that stage differ in `last`, and the array's
    # ready for them too. (Fails with the skid's or the last stage's next value wrong, a copy
    # of `held` a cycle late, a column's take blind to the skid's hold or its count missing a
    # take, or the ready chosen by the wrong `last`: on the pointwise layer, by the `last`
    # entering the last stage when it does not advance.)
    from amaranth.sim import Simulator
    from addershift.hw.accelerator import Accelerator
    from addershift.sim.accel_host import run_session
    seen = {"copies": [], "reads": [], "takes": [], "skids": [], "arrays": [], "gens": []}
    make_gen = accelerator_module.Im2colGenerator
    monkeypatch.setattr(accelerator_module, "Im2colGenerator", lambda **kwargs: (
        seen["gens"].append(make_gen(**kwargs)) or seen["gens"][-1]))
    make_skid = accelerator_module.skid
    monkeypatch.setattr(accelerator_module, "skid", lambda *args: seen["skids"].append(
        (make_skid(*args), args[3])) or seen["skids"][-1][0])
    make_array = Accelerator.make_array
    monkeypatch.setattr(Accelerator, "make_array", lambda self: seen["arrays"].append(
        make_array(self)) or seen["arrays"][-1])
    make_copies = Accelerator._adv_copies
    monkeypatch.setattr(Accelerator, "_adv_copies", staticmethod(
        lambda m, row_adv_next: seen["copies"].extend(make_copies(m, row_adv_next)) or
        seen["copies"]))
    for name in ("_replicated_read", "_shared_read"):
        def read(self, *args, _original=getattr(Accelerator, name)):
            seen["reads"].append(_original(self, *args))
            return seen["reads"][-1]
        monkeypatch.setattr(Accelerator, name, read)
    make_takes = Accelerator._take_copies
    monkeypatch.setattr(Accelerator, "_take_copies", staticmethod(
        lambda m, col_take_next: seen["takes"].extend(make_takes(m, col_take_next)) or
        seen["takes"]))

    if case is None:
        model = digits_net("adder", mode="pow2x2")
    else:
        model = layer_case(case, "adder", mode="pow2x2")
    config = ArrayConfig(pe="adder", rows=rows, cols=cols, requant_mode="pow2x2", max_k=72,
                         weight_depth=2048, act_depth=64, param_depth=64, requant_lanes=1,
                         act_banks=act_banks, weight_relays=relays)
    program = compile_model(model, config)
    dut = Accelerator(config=config)
    results, checked, stalls = [], [0], [0]

    async def bench(ctx):
        port = _AmaranthPort(ctx, dut)
        results.append(await run_session(port, program, _images(model, 1, seed=3), per_stage=True))

    async def watch(ctx):
        (read,) = seen["reads"]
        ((issued, array_ready),), (array,) = seen["skids"], seen["arrays"]
        (gen,) = seen["gens"]
        assert len(seen["copies"]) == config.rows and len(seen["takes"]) == config.cols
        assert len(issued.held_copies) == config.rows + config.cols
        # With a bank per row the generator takes its ready a cycle ahead, `o_ready_next`, a
        # bit per row: each must be the ready of the cycle after.
        assert gen.ready_ahead == (act_banks is None)
        ready_next = gen.o_ready_next if gen.ready_ahead else gen.o.ready
        every_row = (1 << config.rows) - 1
        gen_ready_next = every_row      # (after a reset the generator's ready is 1)
        async for values in ctx.tick().sample(read.adv, *seen["copies"], read.issue[0],
                                              *seen["takes"],
                                              array.i.ready, array_ready,
                                              issued.held, *issued.held_copies,
                                              gen.o.ready, ready_next):
            *values, gen_ready, next_value = values
            if gen.ready_ahead:
                assert gen_ready * every_row == gen_ready_next, f"cycle {checked[0]}"
                gen_ready_next = next_value
            adv, *rest = values[2:]
            copies, (last_valid, *rest) = rest[:config.rows], rest[config.rows:]
            takes, rest = rest[:config.cols], rest[config.cols:]
            ready, ready_copy, held, *held_copies = rest
            assert copies == [adv] * config.rows, f"cycle {checked[0]}"
            assert takes == [last_valid & adv] * config.cols, f"cycle {checked[0]}"
            assert ready_copy == ready, f"cycle {checked[0]}"
            assert held_copies == [held] * len(held_copies), f"cycle {checked[0]}"
            checked[0] += 1
            stalls[0] += not adv

    sim = Simulator(dut)
    sim.add_clock(1e-7)
    sim.add_testbench(bench)
    sim.add_testbench(watch, background=True)
    sim.run()
    (raw,) = results
    result = SimResult(outputs=[_decode(program, r["stages"]) for r in raw["images"]],
                       counters=[r["counters"] for r in raw["images"]],
                       errors=[r["error"] for r in raw["images"]], sim_cycles=checked[0])
    assert check(model, program, _images(model, 1, seed=3), result) is None
    assert checked[0] > 1000 and stalls[0] > 50       # the array did stall the read stages


def test_a_whole_run_takes_the_cycles_it_took_before_the_registered_broadcasts():
    # The sequencer's registered release and delayed counters, the generator's per-row flag and
    # load copies and the skid's held copies (2334c58..08581df), the skid's register of the
    # array's ready, the feeder's and the walker's flags as registers (fede8ee..d0be062) each
    # compute a cycle ahead what was decoded in the cycle itself: a run's cycles, stalls and steps, stage by stage
    # (running totals), are exactly those of 745494a before them, but for one cycle per stage:
    # the generator's registered start and release, its stall. (Fails with a release or a tile
    # load a cycle late.)
    model = digits_net("adder", mode="pow2x2")
    config = ArrayConfig(pe="adder", rows=8, cols=8, requant_mode="pow2x2", max_k=72,
                         weight_depth=2048, act_depth=64, param_depth=64, requant_lanes=1)
    program = compile_model(model, config)
    x = _images(model, 1, seed=3)
    result = simulate(program, x, simulator="amaranth")
    assert check(model, program, x, result) is None
    (stages,) = result.counters[0]
    assert [(s["cycles"], s["stall"], s["issue"]) for s in stages] == \
        [(592, 426, 72), (975, 433, 360), (1195, 441, 488)]


@pytest.mark.parametrize("read_pipeline, relays", [("deep", None), ("short", None), ("deep", 1)])
def test_run_past_the_programs_end_reports_an_error(read_pipeline, relays):
    # The last stage's `last` flag cleared: the run goes on to the empty slot after it, whose
    # magic check must not see the good descriptor before it (the weight memory's read takes
    # three cycles with the deep read pipeline, four with relays, one with the short).
    from addershift.hw.descriptor import descriptor_layout
    from addershift.sw.compiler import descriptor_slot_words
    model = digits_net("adder", mode="pow2x2")
    config = ArrayConfig(pe="adder", rows=2, cols=2, requant_mode="pow2x2", max_k=72,
                         weight_depth=2048, act_depth=64, param_depth=64,
                         read_pipeline=read_pipeline, weight_relays=relays)
    program = compile_model(model, config)
    last = descriptor_layout(config)["last"].offset
    word = (len(program.stages) - 1) * descriptor_slot_words(config) + last // config.weight_word_bits
    program.weight_words[word] &= ~(1 << last % config.weight_word_bits)
    result = simulate(program, _images(model, 1, seed=1), simulator="amaranth")
    assert result.errors == [1]


@pytest.mark.parametrize("read_pipeline, act_banks, act_entry_lanes, relays", [
    ("deep", None, None, None), ("short", None, None, None), ("deep", 1, None, None),
    ("short", None, 2, None), ("deep", None, None, 3)])
def test_host_reads_back_every_region(read_pipeline, act_banks, act_entry_lanes, relays):
    """Random words written to every writable region read back byte for byte, the bytes past a
    word's last used one as 0: words of 24 bits (weights, activations: three lanes) and 144 bits
    (parameters: three pow2x2 lanes; 48 bits, one lane, with narrow banks), so strides of 4, 8
    and 32 bytes. (With weight relays the weight memory's word comes a cycle after the
    others'.)"""
    from amaranth.sim import Simulator
    from addershift.hw.accelerator import Accelerator
    from addershift.hw.config import host_word_bytes
    from addershift.sim.accel_host import read_bytes, write_bytes
    config = ArrayConfig(pe="adder", rows=2, cols=3, max_k=16, weight_depth=64, act_depth=16,
                         param_depth=16, requant_mode="pow2x2", read_pipeline=read_pipeline,
                         act_banks=act_banks, act_entry_lanes=act_entry_lanes,
                         requant_lanes=act_entry_lanes and 1, weight_relays=relays)
    dut = Accelerator(config=config)
    rng = np.random.default_rng(11)
    widths = {"weights": config.weight_word_bits, "params": config.param_word_bits,
              "act0": config.act_word_bits, "act1": config.act_word_bits}
    assert widths == {"weights": 24, "params": 48 if act_entry_lanes else 144, "act0": 24,
                      "act1": 24}
    writes, expected = {}, {}
    for region, bits in widths.items():
        stride, used = host_word_bytes(bits), -(-bits // 8)
        words = [rng.integers(0, 256, used, dtype=np.uint8).tobytes() for _ in range(5)]
        # A write sends a word's used bytes and its padding; the padding is ignored.
        writes[region] = b"".join(w + bytes(rng.integers(0, 256, stride - used, dtype=np.uint8))
                                  for w in words)
        expected[region] = b"".join(w.ljust(stride, b"\0") for w in words)
    seen = {}

    async def bench(ctx):
        port = _AmaranthPort(ctx, dut)
        for region, data in writes.items():
            await write_bytes(port, region, 0, data)
        for region, data in expected.items():
            seen[region] = await read_bytes(port, region, 0, len(data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == expected


@pytest.mark.parametrize("read_pipeline, relays", [("deep", None), ("short", None), ("deep", 3)])
def test_host_reads_streamed_back_to_back(read_pipeline, relays):
    """A host that offers its next read address as soon as one is taken, and takes the bytes
    with random stalls, gets every byte once and in order: the core takes an address only when
    the previous byte is gone."""
    from amaranth.sim import Simulator
    from addershift.hw.accelerator import Accelerator
    from addershift.sim.accel_host import _address, write_bytes
    config = ArrayConfig(pe="adder", rows=2, cols=3, max_k=16, weight_depth=64, act_depth=16,
                         param_depth=16, requant_mode="pow2x2", read_pipeline=read_pipeline,
                         weight_relays=relays)
    dut = Accelerator(config=config)
    rng = np.random.default_rng(12)
    data = {region: rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
            for region in ("weights", "act0", "act1")}
    wanted = [(region, offset) for region in data for offset in range(0, 40, 4)]
    wanted += [(region, offset + 1) for region, offset in wanted]
    got = []

    async def bench(ctx):
        port = _AmaranthPort(ctx, dut)
        for region, words in data.items():
            # 24-bit words on a stride of 4: the fourth byte of each is padding
            await write_bytes(port, region, 0, words)
        for _ in range(8):      # (the last write lands)
            await port.tick()
        sent = 0
        while len(got) < len(wanted):
            if sent < len(wanted):
                port.set("bus__read_addr__valid", 1)
                port.set("bus__read_addr__payload", _address(*wanted[sent]))
            else:
                port.set("bus__read_addr__valid", 0)
            ready = int(rng.random() < 0.6)
            port.set("bus__read_data__ready", ready)
            if port.get("bus__read_data__valid") and ready:
                got.append(port.get("bus__read_data__payload"))
            if sent < len(wanted) and port.get("bus__read_addr__ready"):
                sent += 1
            await port.tick()
            assert port.cycles < 40 * len(wanted), (sent, got)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [data[region][offset] for region, offset in wanted]


def _stalls_per_stage(model, x, **options):
    """Runs ``model`` on a 4-row adder accelerator with ``options``, checks it bit for bit and
    its k-steps against the program's; returns the program and each stage's stall cycles."""
    config = ArrayConfig(pe="adder", rows=4, requant_mode="pow2x2", max_k=72, weight_depth=2048,
                         act_depth=128, param_depth=64, global_pool=False, **options)
    program = compile_model(model, config)
    result = simulate(program, x, simulator="amaranth", per_stage=True)
    assert check(model, program, x, result) is None, options
    counts = result.stage_counts(0)
    assert [c["issue"] for c in counts] == [s.issue_cycles for s in program.stages]
    return program, [c["stall"] for c in counts]


@pytest.mark.parametrize("lanes, entry, read_pipeline, writeback_pipeline", [
    (1, 1, "short", "short"), (2, 2, "deep", "deep"), (1, 4, "deep", "short"),
    (2, 4, "short", "deep")])
def test_narrow_banks_compute_what_the_replicated_read_does(lanes, entry, read_pipeline,
                                                            writeback_pipeline):
    """Narrow banks (``act_entry_lanes``): bit-exact on the digits network (a max-pool layer
    among its stages), and stage by stage the same k-steps and the same stall cycles as the
    replicated read of whole words, on 4 x 4 PEs with entries of one, two and four lanes."""
    model = digits_net("adder", mode="pow2x2")
    x = _images(model, 1, seed=9)
    options = dict(cols=4, requant_lanes=lanes, read_pipeline=read_pipeline,
                   writeback_pipeline=writeback_pipeline)
    _, replicated = _stalls_per_stage(model, x, **options)
    _, narrow = _stalls_per_stage(model, x, act_entry_lanes=entry, **options)
    assert narrow == replicated


@pytest.mark.parametrize("read_pipeline", ["short", "deep"])
def test_narrow_banks_of_four_bit_activations_take_every_host_word(read_pipeline):
    """4-bit activations on 4 columns: an activation word is two bytes, so the host may write
    one every two cycles, and its copy into the row banks must take no longer: entries of two
    lanes (the least ``ArrayConfig`` accepts) keep every input word, bit-exact, with the
    replicated read's stall cycles. (Entries of one lane lost each word's last two.)"""
    from addershift.sw.examples import random_conv, random_linear
    from addershift.sw.model import Flatten, MaxPool2d, QModel, ReLU
    rng = np.random.default_rng(6)
    model = QModel(input_shape=(4, 6, 6), x_bits=4, layers=[    # every input lane used
        random_conv(rng, "conv", "adder", 4, 8, mode="pow2x2", x_bits=4), ReLU("relu"),
        MaxPool2d("pool", kernel=2, stride=2), Flatten("flatten"),
        random_linear(rng, "fc", "adder", 8 * 3 * 3, 5, mode="pow2x2", x_bits=4)])
    model.validate()
    x = rng.integers(0, 8, (1,) + tuple(model.input_shape))
    options = dict(cols=4, x_bits=4, w_bits=4, requant_lanes=1, read_pipeline=read_pipeline)
    _, replicated = _stalls_per_stage(model, x, **options)
    _, narrow = _stalls_per_stage(model, x, act_entry_lanes=2, **options)
    assert narrow == replicated


def test_narrow_banks_take_a_host_that_skips_the_padding(monkeypatch):
    """6-bit activations on 4 columns: a word uses 3 of its 4 bytes, and a host that writes only
    those (the device interface allows it) sends one every 3 cycles; entries of two lanes (the
    least ``ArrayConfig`` accepts since it counts used bytes) keep every input word.
    (Entries of one lane, accepted before, lost each word's last one.)"""
    from addershift.sim import accel_host
    from addershift.sw.examples import random_conv, random_linear
    from addershift.sw.model import Flatten, QModel
    rng = np.random.default_rng(7)
    model = QModel(input_shape=(4, 3, 3), x_bits=6, layers=[    # every input lane used
        random_conv(rng, "conv", "adder", 4, 4, mode="pow2x2", x_bits=6), Flatten("flatten"),
        random_linear(rng, "fc", "adder", 4 * 3 * 3, 3, mode="pow2x2", x_bits=6)])
    model.validate()
    x = rng.integers(-32, 32, (1,) + tuple(model.input_shape))
    stride, used = 4, 3
    write_bytes = accel_host.write_bytes

    async def used_bytes_only(port, region, offset, data):
        if not region.startswith("act"):
            return await write_bytes(port, region, offset, data)
        port.set("bus__write__valid", 1)
        for i, byte in enumerate(data):
            if (offset + i) % stride < used:
                port.set("bus__write__payload", accel_host._address(region, offset + i)
                         | byte << 32)
                await port.tick()
        port.set("bus__write__valid", 0)

    monkeypatch.setattr(accel_host, "write_bytes", used_bytes_only)
    config = ArrayConfig(pe="adder", rows=2, cols=4, x_bits=6, w_bits=6, requant_mode="pow2x2",
                         max_k=36, weight_depth=128, act_depth=16, param_depth=16,
                         requant_lanes=1, act_entry_lanes=2, global_pool=False)
    assert (config.act_word_bytes, -(-config.act_word_bits // 8)) == (stride, used)
    program = compile_model(model, config)
    result = simulate(program, x, simulator="amaranth", per_stage=True)   # every stage's output
    assert check(model, program, x, result) is None


def test_narrow_banks_written_in_groups_compute_what_one_group_does(monkeypatch):
    """Row banks written from a copy of the write per group of ``TILE`` rows (here two rows,
    two groups of 4 x 4 PEs' banks): bit-exact, and the same stall cycles stage by stage."""
    model = digits_net("adder", mode="pow2x2")
    x = _images(model, 1, seed=4)
    options = dict(cols=4, requant_lanes=2, act_entry_lanes=2, read_pipeline="deep",
                   writeback_pipeline="deep")
    _, one_group = _stalls_per_stage(model, x, **options)
    monkeypatch.setattr(accelerator_module, "TILE", 2)
    _, groups = _stalls_per_stage(model, x, **options)
    assert groups == one_group


@pytest.mark.parametrize("act_banks", [None, 2])
def test_weight_relays_compute_what_the_plain_read_does(act_banks):
    """Weight relays (``weight_relays``, a weight read of four cycles): bit-exact on the
    digits network with one requantiser lane (the array stalls while words arrive), stage by
    stage the same k-steps as without and one cycle more (the stage more in the read
    pipeline, filled once per stage), with a bank per row and shared."""
    model = digits_net("adder", mode="pow2x2")
    x = _images(model, 1, seed=5)
    options = dict(cols=4, requant_lanes=1, act_banks=act_banks)
    _, plain = _stalls_per_stage(model, x, **options)
    _, relayed = _stalls_per_stage(model, x, weight_relays=2, **options)
    assert relayed == [stalls + 1 for stalls in plain]


def test_narrow_banks_on_every_layer_case():
    # Pooling (max and global average) and strided, padded and linear layers, six columns in
    # entries of two lanes: a word takes the whole-word copy's write and three entries in the
    # row banks, whose addresses leave room for four (a power of two).
    config = ArrayConfig(pe="adder", rows=3, cols=6, requant_mode="pow2x2", max_k=128,
                         weight_depth=512, act_depth=128, param_depth=64, requant_lanes=2,
                         act_entry_lanes=2)
    assert config.act_entries == 4
    jobs = []
    for n, name in enumerate(sorted(CASES)):
        model = layer_case(name, "adder", mode="pow2x2", seed=n)
        jobs.append((model, compile_model(model, config), _images(model, 1, seed=n)))
    results = simulate_batch([(p, x) for _, p, x in jobs], simulator="amaranth", per_stage=True)
    for (model, program, x), result, name in zip(jobs, results, sorted(CASES)):
        assert check(model, program, x, result) is None, name


# Every PE kind runs on Icarus; Verilator builds (a minute of C++ each) run adder and shift by
# default, the multiplier baseline with `make test-slow`.
@pytest.mark.cocotb
@pytest.mark.parametrize("op, rows, cols, simulator, act_banks", [
    ("adder", 4, 4, "verilator", 2), ("shift", 3, 2, "verilator", 1),
    pytest.param("mul", 2, 3, "verilator", None, marks=pytest.mark.slow),
    ("mul", 2, 3, "icarus", None), ("shift", 2, 2, "icarus", None), ("adder", 2, 2, "icarus", 1),
    ("shift", 4, 2, "icarus", 2), ("adder", 2, 4, "icarus", "narrow"),
    ("shift", 3, 2, "verilator", "narrow"), ("adder", 2, 4, "verilator", "narrow"),
    ("shift", 2, 3, "verilator", None),
])
def test_digits_network_on_verilog(op, rows, cols, simulator, act_banks, tmp_path,
                                   monkeypatch):
    model = digits_net(op, mode={"adder": "pow2x2", "shift": "shift", "mul": "mul"}[op])
    lanes = {"adder": 2, "shift": 1 if rows == 3 else None}.get(op)
    narrow = act_banks == "narrow"
    if narrow:
        # Narrow banks written in groups of one row (a write port each), as rows beyond a tile's
        # are.
        monkeypatch.setattr(accelerator_module, "TILE", 1)
    config = ArrayConfig(pe=op, rows=rows, cols=cols, requant_mode=model.layers[0].requant.mode,
                         max_k=72, weight_depth=2048, act_depth=64, param_depth=64,
                         # Lanes 2, 1 and all; each pipeline on both simulators, rows sharing
                         # activation banks with each read pipeline on both, and narrow banks
                         # (entries of the requantiser's lanes) with each read pipeline on
                         # both (deep: the rows' own lane copies, `step_layout`). The short
                         # pipelines with a bank per row keep both buffers in one memory
                         # (`act_pingpong`): shift 2x2 and 2x3.
                         requant_lanes=lanes,
                         requant_pipeline="short" if op == "shift" else "deep",
                         writeback_pipeline="short" if op == "shift" else "deep",
                         read_pipeline="short" if op == "shift" else "deep",
                         act_banks=None if narrow else act_banks,
                         act_entry_lanes=lanes if narrow else None)
    assert config.act_pingpong == (op == "shift" and act_banks is None)
    program = compile_model(model, config)
    x = _images(model, 2, seed=3)
    # One image in one run (its stages overlap), the other a stage at a time with every stage's
    # output compared: a small error in an early layer can vanish in the requantisers before
    # the last.
    whole, staged = simulate_batch([(program, x[:1]), (program, x[1:])], simulator=simulator,
                                   per_stage=[False, True], build_dir=tmp_path)
    for images, result, runs in ((x[:1], whole, 1), (x[1:], staged, len(program.stages))):
        assert result.errors == [0]
        assert len(result.counters[0]) == runs
        assert check(model, program, images, result) is None
        counts = result.stage_counts(0)
        assert [c["issue"] for c in counts] == [s.issue_cycles for s in program.stages]


def _back_to_back_pool(in_hw, pool, writeback_pipeline, simulator, build_dir=None, *, rows=4,
                       stride=None):
    # Every lane at once: rows reach the write-back in consecutive cycles, so the pixels of one
    # window follow each other one to four cycles apart (an 8-row tile of a 3- to 5-wide layer,
    # 2x2 windows two to four apart), the deep pipeline forwarding the words just written and the
    # short one reading through the memory's transparency; 2x2 outputs put a whole window in one
    # tile.
    from addershift.sw.examples import random_conv
    from addershift.sw.model import MaxPool2d, QModel
    conv = random_conv(np.random.default_rng(7), "conv", "adder", 4, 4, kernel=1, padding=0,
                       mode="pow2x2")
    model = QModel(input_shape=(4,) + in_hw,
                   layers=[conv, MaxPool2d(name="pool", kernel=pool, stride=stride or pool)])
    config = ArrayConfig(pe="adder", rows=rows, cols=4, requant_mode="pow2x2", max_k=16,
                         weight_depth=64, act_depth=64, param_depth=16, global_pool=False,
                         writeback_pipeline=writeback_pipeline)
    program = compile_model(model, config)
    x = _images(model, 3, seed=2)
    result = simulate(program, x, simulator=simulator, build_dir=build_dir)
    assert check(model, program, x, result) is None


@pytest.mark.parametrize("writeback_pipeline", ["deep", "short"])
@pytest.mark.parametrize("in_hw, pool", [((2, 2), 2), ((3, 7), 3), ((5, 4), 2), ((4, 8), 4)])
def test_max_pool_updates_back_to_back(poisoned_collisions, writeback_pipeline, in_hw, pool):
    # (A read in the cycle of its word's write gives a wrong word, as a block RAM may.)
    _back_to_back_pool(in_hw, pool, writeback_pipeline, "amaranth")


@pytest.mark.parametrize("writeback_pipeline", ["deep", "short"])
@pytest.mark.parametrize("width", [3, 4, 5])
def test_max_pool_update_rows_after_the_last(poisoned_collisions, writeback_pipeline, width):
    # Pixels (0,1) and (1,0) of a 3- to 5-wide layer's 2x2 window, stride 2 to 4: the pixels
    # between are in no window, so the second update's read misses a write two to four cycles
    # old (the deep write-back forwards the words of the four rows before).
    _back_to_back_pool((4, width), 2, writeback_pipeline, "amaranth", rows=8, stride=width - 1)


@pytest.mark.parametrize("writeback_pipeline", ["deep", "short"])
@pytest.mark.parametrize("in_hw, pool, stride", [((3, 5), 1, 1), ((5, 5), 1, 2), ((5, 7), 2, 3),
                                                 ((4, 1), 1, 1), ((6, 3), 3, 3)])
def test_pooling_window_ends_at_every_stride(writeback_pipeline, in_hw, pool, stride):
    # The walk's end flags (a row's end, a window offset's end) are registers whose next values
    # compare with the bounds less two: a stride of 1 (its bound less two is -1) and of 2 (0),
    # pixels in no window, a layer one pixel wide, windows that end with the row.
    _back_to_back_pool(in_hw, pool, writeback_pipeline, "amaranth", stride=stride)


def test_host_words_after_a_global_pool():
    # The deep write-back carries the host's words to the buffers between stages: the flags of
    # the stage's last row (here a global average), still in its first stage, must not touch
    # the next image's input, written right after. (A max-pool merge's flag:
    # test_max_pool_update_rows_after_the_last with width 3 fails without its gate.)
    from addershift.sw.examples import random_conv
    from addershift.sw.model import GlobalAvgPool, QModel
    conv = random_conv(np.random.default_rng(3), "conv", "adder", 4, 4, kernel=1, padding=0,
                       mode="pow2x2")
    model = QModel(input_shape=(4, 4, 4), layers=[conv, GlobalAvgPool("pool", shift=2)])
    config = ArrayConfig(pe="adder", rows=4, cols=4, requant_mode="pow2x2", max_k=16,
                         weight_depth=64, act_depth=64, param_depth=16, global_pool=True,
                         writeback_pipeline="deep")
    program = compile_model(model, config)
    x = _images(model, 2, seed=4)
    result = simulate(program, x, simulator="amaranth")
    assert check(model, program, x, result) is None


# Each Verilator case is a build of its own (a minute or two of C++): the default suite runs
# eight rows on Icarus and four on Verilator, the short write-back on Icarus; `make test-slow`
# adds eight rows on Verilator, and the short write-back there.
@pytest.mark.cocotb
@pytest.mark.parametrize("simulator, in_hw, pool, rows, stride, writeback", [
    ("verilator", (3, 7), 3, 4, 3, "deep"), ("icarus", (2, 2), 2, 4, 2, "deep"),
    pytest.param("verilator", (4, 4), 2, 8, 3, "deep", marks=pytest.mark.slow),
    ("icarus", (4, 4), 2, 8, 3, "deep"),
    pytest.param("verilator", (4, 5), 2, 8, 4, "deep", marks=pytest.mark.slow),
    ("icarus", (4, 3), 2, 8, 2, "deep"),
    ("icarus", (5, 7), 2, 4, 3, "short"),
    pytest.param("verilator", (3, 7), 3, 8, 3, "short", marks=pytest.mark.slow)])
def test_max_pool_updates_back_to_back_on_verilog(simulator, in_hw, pool, rows, stride,
                                                  writeback, tmp_path):
    _back_to_back_pool(in_hw, pool, writeback, simulator, build_dir=tmp_path, rows=rows,
                       stride=stride)


def test_pixel_counts_at_their_widest():
    # 15x17 = 255 conv output pixels, the most an 8-bit count holds (act_depth 32: count_bits 8);
    # a 1x1 conv with padding 6 over a 3x5 input, pooled 4x4 back into the small buffer.
    from addershift.sw.examples import random_conv
    from addershift.sw.model import MaxPool2d, QModel
    conv = random_conv(np.random.default_rng(5), "conv", "adder", 4, 4, kernel=1, padding=6,
                       mode="pow2x2")
    model = QModel(input_shape=(4, 3, 5), layers=[conv, MaxPool2d(name="pool", kernel=4, stride=4)])
    config = ArrayConfig(pe="adder", rows=2, cols=4, requant_mode="pow2x2", max_k=16,
                         weight_depth=64, act_depth=32, param_depth=16, requant_lanes=1,
                         requant_pipeline="short", global_pool=False)
    assert config.count_bits == 8
    program = compile_model(model, config)
    assert program.stages[0].conv_shape == (15, 17)
    x = _images(model, 2, seed=1)
    result = simulate(program, x, simulator="amaranth")
    assert check(model, program, x, result) is None


def _extreme_reduction(op):
    """A conv whose reduction is the build's longest (8 x 3 x 3 = max_k 72) on inputs of -128
    everywhere, with weights that drive the accumulators to both ends of their range (adder:
    0 and -255 per step; mul: 16384 and -16256; shift: +-1024), a zero-weight column, and a
    requantiser that saturates both ways."""
    from addershift.sw.model import Conv2d, QModel, Requant
    from addershift.sw.numerics import Op, int_range
    lo, hi = int_range(8)
    ones = np.ones((4, 8, 3, 3), np.int8)
    if op == "shift":       # columns: +max, -max, zero weights, +max
        weights = {"sign": np.array([-1, 1, 0, -1], np.int8)[:, None, None, None] * ones,
                   "exponent": np.full((4, 8, 3, 3), 3, np.int8)}
    else:
        weights = {"weight": np.array([lo, hi, 0, lo], np.int8)[:, None, None, None] * ones}
    requant = Requant(mode="shift", bias=np.array([0, 0, 0, 1000], np.int32),
                      params={"shift": np.array([0, 0, 1, 0], np.int8)})
    conv = Conv2d(name="conv", op=Op(op), weights=weights, requant=requant, w_bits=8, p_min=-4,
                  p_max=3, kernel=(3, 3), padding=0)
    model = QModel(input_shape=(8, 4, 4), layers=[conv])
    config = ArrayConfig(pe=op, rows=2, cols=4, requant_mode="shift", max_k=72,
                         weight_depth=256, act_depth=64, param_depth=16)
    return model, config, np.full((1, 8, 4, 4), lo)


# Amaranth for every PE kind, Icarus too; Verilator (a minute's compile each) for adder by
# default, shift and mul with `make test-slow`.
@pytest.mark.parametrize("op, simulator", [
    *[(op, "amaranth") for op in OPS],
    *[pytest.param(op, "icarus", marks=pytest.mark.cocotb) for op in OPS],
    pytest.param("adder", "verilator", marks=pytest.mark.cocotb),
    *[pytest.param(op, "verilator", marks=[pytest.mark.cocotb, pytest.mark.slow])
      for op in ("shift", "mul")]])
def test_longest_reduction_at_the_accumulator_extremes(op, simulator, tmp_path):
    from addershift.sw.golden import conv2d
    from addershift.sw.numerics import acc_range
    model, config, x = _extreme_reduction(op)
    conv = model.layers[0]
    # the corners are reached: the accumulators at both ends of their range, and the outputs
    # saturated both ways
    acc = conv2d(x, conv.op, conv.weights, kernel=conv.kernel, p_min=conv.p_min)
    widths = dict(x_bits=8, p_min=-4, p_max=3) if op == "shift" else dict(x_bits=8, w_bits=8)
    assert {int(acc.min()), int(acc.max())} >= set(acc_range(op, 72, **widths)) - {0}
    out = trace(model, x)[0]
    assert out.max() == 127 and out.min() == -128
    program = compile_model(model, config)
    result = simulate(program, x, simulator=simulator, per_stage=True, build_dir=tmp_path)
    assert check(model, program, x, result) is None


# Every shift on Amaranth; one (ties and saturation) through each write-back on Icarus.
@pytest.mark.parametrize("shift, simulator", [
    *[(shift, "amaranth") for shift in (0, 1, 6, 40)],
    pytest.param(1, "icarus", marks=pytest.mark.cocotb)])
def test_global_pool_of_signed_sums_saturates_and_rounds_both_ways(shift, simulator, tmp_path):
    # No ReLU in front: the sums take both signs (ties at shift 1 among them), and channels 0
    # and 1 (zero weights, bias +-1000) sit at 127 and -128, so shift 0 saturates both ways.
    from addershift.sw.model import Conv2d, GlobalAvgPool, QModel, Requant
    from addershift.sw.numerics import Op
    rng = np.random.default_rng(shift)
    weights = rng.integers(-128, 128, (4, 4, 1, 1)).astype(np.int8)
    weights[:2] = 0
    requant = Requant(mode="shift", bias=np.array([1000, -1000, 0, 0], np.int32),
                      params={"shift": np.array([0, 0, 8, 9], np.int8)})
    conv = Conv2d(name="conv", op=Op.MUL, weights={"weight": weights}, requant=requant, w_bits=8,
                  kernel=(1, 1), padding=0)
    model = QModel(input_shape=(4, 8, 8), layers=[conv, GlobalAvgPool("gap", shift=shift)])
    x = rng.integers(-128, 128, (2, 4, 8, 8))
    conv_out, pooled = trace(model, x)
    sums = conv_out.sum(axis=(2, 3))
    assert (sums > 0).any() and (sums < 0).any()
    if shift == 0:
        assert (pooled[:, 0] == 127).all() and (pooled[:, 1] == -128).all()
    for writeback in ("deep", "short"):
        config = ArrayConfig(pe="mul", rows=4, cols=4, requant_mode="shift", max_k=16,
                             weight_depth=64, act_depth=128, param_depth=16, global_pool=True,
                             writeback_pipeline=writeback)
        program = compile_model(model, config)
        result = simulate(program, x, simulator=simulator, build_dir=tmp_path / writeback)
        assert check(model, program, x, result) is None, writeback


def test_an_array_of_several_tiles(monkeypatch):
    # Tiles of 2x2 PEs (hw.array.TILE patched): the array's output queue and per-tile registers,
    # with their extra cycle of latency, inside the whole core; and the write-back's copies of
    # its merge choice, one per two lanes (the network max-pools).
    import addershift.hw.array as array_module
    import addershift.hw.writeback as writeback_module
    monkeypatch.setattr(array_module, "TILE", 2)
    monkeypatch.setattr(writeback_module, "TILE", 2)
    model = digits_net("adder", mode="pow2x2")
    config = ArrayConfig(pe="adder", rows=3, cols=4, requant_mode="pow2x2", max_k=72,
                         weight_depth=2048, act_depth=64, param_depth=64, global_pool=False)
    program = compile_model(model, config)
    x = _images(model, 2, seed=4)
    result = simulate(program, x, simulator="amaranth", per_stage=True)
    assert check(model, program, x, result) is None
    for stage, counts in zip(program.stages, result.stage_counts(0)):
        assert counts["issue"] == stage.issue_cycles and counts["busy_pe"] == stage.busy_pe_cycles


# Six whole-network simulations per case: the default suite runs each read pipeline on one
# shape (together words of one, two and four lanes), `make test-slow` the other two.
@pytest.mark.parametrize("read_pipeline, cols", [
    ("deep", 2), ("short", 4),
    pytest.param("deep", 4, marks=pytest.mark.slow),
    pytest.param("short", 2, marks=pytest.mark.slow)])
def test_shared_activation_banks_cost_what_the_docs_say(read_pipeline, cols):
    """Rows sharing a bank: bit-exact, the same k-steps, and at most ``max(0, G + 2 - L)`` more
    stall cycles per activation word of ``L`` lanes, ``G`` rows per bank, plus ``G + 2`` for a
    stage's first word (fewer where they overlap stalls the replicated read has anyway), on
    4 x 2 PEs (words of one and two lanes) and 4 x 4 PEs (one and four)."""
    model = digits_net("adder", mode="pow2x2")
    x = _images(model, 1, seed=6)
    stalls = {}
    for banks in (None, 2, 1):
        program, stalls[banks] = _stalls_per_stage(model, x, cols=cols,
                                                   read_pipeline=read_pipeline, act_banks=banks)
    for banks in (2, 1):
        rows_per_bank = 4 // banks
        for stage, base, shared in zip(program.stages, stalls[None], stalls[banks]):
            cin, kh, kw = stage.in_shape[0], *stage.kernel
            per_window = sum(max(0, rows_per_bank + 2 - min(cols, cin - c))
                             for c in range(0, cin, cols))
            cost = stage.tiles * stage.groups * kh * kw * per_window
            assert cost - base <= shared - base <= cost + rows_per_bank + 2, \
                (cols, banks, stage.name)


class _PoisonedCollisions:
    """Stands in for ``hw.memories.ReplicatedMemory`` in the accelerator: a read the memory
    declares undefined (``collisions="undefined"``: of an address written in the same cycle)
    returns the inverted word, as a block RAM may give any word, where every simulator gives the
    old one; so does such a bank before its first read (all ones: board builds drop the initial
    value of its word register, ``hw.memories.BRAM_WORD_SUFFIX``). A reader that used such a
    word then fails. ``made`` lists the memories, and each one's ``collided`` marks its banks'
    undefined reads in the cycle they are made."""

    made = []

    def __new__(cls, **kwargs):
        from amaranth.hdl import Module, Mux, Signal
        from addershift.hw.memories import ReplicatedMemory

        class Poisoned(ReplicatedMemory):
            def __init__(self):
                super().__init__(**kwargs)
                self.collided = Signal(self.banks)

            def elaborate(self, platform):
                m = Module()
                m.submodules.inner = inner = ReplicatedMemory(**kwargs)
                m.d.comb += [inner.w_en.eq(self.w_en), inner.w_addr.eq(self.w_addr),
                             inner.w_data.eq(self.w_data), inner.r_en.eq(self.r_en),
                             inner.r_addr.eq(self.r_addr)]
                for b in range(self.banks):
                    undefined = kwargs.get("collisions") == "undefined" and not (
                        b == 0 and kwargs.get("transparent", True))
                    w_en, w_addr = self.w_en, self.w_addr
                    if self.write_ports > 1:       # bank b's group's port
                        port = b * self.write_ports // self.banks
                        w_en, w_addr = w_en[port], w_addr[port]
                    hit = (w_en & self.r_en[b] & (w_addr == self.r_addr[b])
                           if undefined else 0)
                    poisoned = Signal(name=f"poisoned{b}", init=undefined)
                    with m.If(self.r_en[b]):
                        m.d.sync += poisoned.eq(hit)
                    word = inner.r_data[b]
                    m.d.comb += [self.collided[b].eq(hit),
                                 self.r_data[b].eq(Mux(poisoned, ~word, word))]
                return m

        memory = Poisoned()
        cls.made.append(memory)
        return memory


@pytest.fixture
def poisoned_collisions(monkeypatch):
    """Undefined collisions poisoned (:class:`_PoisonedCollisions`) in every accelerator built,
    and counted per memory: returns ``{memory: undefined reads}`` as the simulations go on."""
    import addershift.hw.accelerator as accelerator
    from addershift.sim.accel_sim import _AmaranthPort
    monkeypatch.setattr(_PoisonedCollisions, "made", [])
    monkeypatch.setattr(accelerator, "ReplicatedMemory", _PoisonedCollisions)
    counts = {}
    tick = _AmaranthPort.tick

    async def counting_tick(port):
        for memory in _PoisonedCollisions.made:
            if port.ctx.get(memory.collided):
                counts[memory] = counts.get(memory, 0) + 1
        await tick(port)

    monkeypatch.setattr(_AmaranthPort, "tick", counting_tick)
    return counts


@pytest.mark.parametrize("read_pipeline", ["deep", "short"])
def test_a_read_right_after_a_write_sees_it(poisoned_collisions, read_pipeline):
    """A word read back as soon as the core takes the address after its write: the core must
    not take it while the write is still on its way to the memory (the deep pipeline's write
    passes two registers; an activation word, the deep write-back's last two stages too), or
    the read meets the write in the block RAM (undefined, poisoned here)."""
    from amaranth.sim import Simulator
    from addershift.hw.accelerator import Accelerator
    from addershift.hw.config import host_word_bytes
    from addershift.sim.accel_host import read_bytes, write_bytes
    config = ArrayConfig(pe="adder", rows=2, cols=3, max_k=16, weight_depth=64, act_depth=16,
                         param_depth=16, requant_mode="pow2x2", read_pipeline=read_pipeline)
    dut = Accelerator(config=config)
    rng = np.random.default_rng(5)
    widths = {"weights": config.weight_word_bits, "params": config.param_word_bits,
              "act0": config.act_word_bits, "act1": config.act_word_bits}
    seen, expected = [], []

    async def bench(ctx):
        port = _AmaranthPort(ctx, dut)
        for region, bits in widths.items():
            stride, used = host_word_bytes(bits), -(-bits // 8)
            for word in range(3):
                # The used bytes alone: the word is written with the last byte sent.
                data = rng.integers(0, 256, used, dtype=np.uint8).tobytes()
                await write_bytes(port, region, word * stride, data)
                seen.append(await read_bytes(port, region, word * stride, used))
                expected.append(data)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == expected


@pytest.mark.parametrize("pipeline, narrow, act_depth", [
    ("deep", False, 128), ("short", False, 128), ("short", False, 100), ("short", False, 256),
    ("deep", True, 128), ("short", True, 128)])
def test_undefined_collisions_are_never_used(poisoned_collisions, pipeline, narrow, act_depth):
    # Every memory that leaves a read of the address written in the same cycle undefined: its
    # users never take that word (the deep write-back forwards the words written since its read;
    # narrow banks' reads come after the copy's writes of their entries).
    # A max-pool layer makes the write-back read a word in the cycle it is written. (Short
    # pipelines: 128 words keep both buffers in one memory, 100 too (buffer 1 from word 128 of
    # 228), 256 in two.)
    model = digits_net("adder", mode="pow2x2")
    config = ArrayConfig(pe="adder", rows=4, cols=4, requant_mode="pow2x2", max_k=72,
                         weight_depth=2048, act_depth=act_depth, param_depth=64,
                         read_pipeline=pipeline, writeback_pipeline=pipeline,
                         requant_lanes=1 if narrow else None,
                         act_entry_lanes=1 if narrow else None)
    assert config.act_pingpong == (pipeline == "short" and not narrow and act_depth <= 128)
    program = compile_model(model, config)
    x = _images(model, 1, seed=7)
    result = simulate(program, x, simulator="amaranth", per_stage=True)
    assert check(model, program, x, result) is None
    if pipeline == "deep":
        assert sum(poisoned_collisions.values()) > 0


@pytest.mark.parametrize("pipeline, tile", [("deep", 1), ("short", 8)])
def test_a_run_reads_the_hosts_last_word_after_its_copy(poisoned_collisions, monkeypatch,
                                                        pipeline, tile):
    # Narrow banks: the input is one word, the host's last write, and the run's first read is
    # its first entry, which the row copy writes two cycles after the word. The run starts as
    # soon as the host is done; its first read must wait for the copy (a read in the cycle of
    # the copy's write is undefined in a block RAM, poisoned here), from a port per row too.
    from addershift.sw.layer_cases import _linear
    from addershift.sw.model import QModel
    monkeypatch.setattr(accelerator_module, "TILE", tile)
    # (A wide word is the fewest descriptor words to load before the first read: 9 cycles
    # after the copy's first entry, where 4 columns leave 14.)
    config = ArrayConfig(pe="adder", rows=4, cols=32, requant_mode="pow2x2", max_k=32,
                         weight_depth=256, act_depth=16, param_depth=64, read_pipeline=pipeline,
                         writeback_pipeline=pipeline, requant_lanes=1, act_entry_lanes=1)
    model = QModel(input_shape=(32,), layers=[
        _linear(np.random.default_rng(3), "fc", "adder", "pow2x2", 32, 3)])
    model.validate()
    program = compile_model(model, config)
    assert len(program.input_image(np.zeros(32))) == config.act_word_bytes
    x = _images(model, 2, seed=4)
    result = simulate(program, x, simulator="amaranth")
    assert check(model, program, x, result) is None


@pytest.mark.parametrize("read_pipeline", ["deep", "short"])
def test_counters_read_while_they_are_written(poisoned_collisions, read_pipeline):
    # The counters are LIVE: a host read may come in the cycle the sequencer writes the word
    # (undefined in the block RAM: the deep read pipeline gives the written word instead, the
    # short one takes no read in a write's cycle). Every byte read while stage 0 runs is the
    # byte before the write (0, or the same run's count from the run before) or after it; runs
    # started 0-11 cycles apart make the reads meet the writes (0-7 stopped meeting them when
    # the generator's start became a register: the last assert).
    from amaranth.sim import Simulator
    from addershift.hw.accelerator import Accelerator
    from addershift.sim.accel_host import read_bytes, start_run, write_bytes
    from addershift.sim.accel_sim import _AmaranthPort
    model = digits_net("adder", mode="pow2x2")
    config = ArrayConfig(pe="adder", rows=2, cols=2, requant_mode="pow2x2", max_k=72,
                         weight_depth=2048, act_depth=64, param_depth=64,
                         read_pipeline=read_pipeline)
    program = compile_model(model, config)
    dut = Accelerator(config=config)
    seen, final = [], {}

    async def bench(ctx):
        port = _AmaranthPort(ctx, dut)
        for region, data in program.images().items():
            await write_bytes(port, region, 0, data)
        await write_bytes(port, "act0", 0, program.input_image(_images(model, 1, seed=2)[0]))
        for delay in range(12):
            await start_run(port, count=1)            # stage 0 alone: its four words
            for _ in range(delay):
                await port.tick()
            while port.get("bus__busy"):
                seen.extend(enumerate(await read_bytes(port, "counters", 0, 16)))
            final[delay] = await read_bytes(port, "counters", 0, 16)

    sim = Simulator(dut)              # elaborates the memories
    perf, = (m for m in _PoisonedCollisions.made if m.width == config.counter_bits)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(set(final.values())) == 1
    last = final[0]
    assert all(byte in (0, last[i]) for i, byte in seen), \
        [(i, byte, last[i]) for i, byte in seen if byte not in (0, last[i])]
    collided = poisoned_collisions.get(perf, 0)
    assert collided > 0 if read_pipeline == "deep" else collided == 0


def test_amaranth_simulation_lifts_the_int_digit_limit(monkeypatch):
    # An array of 2,048 PEs or more (bench/accel_cycles.py --shapes 32x64) holds constants past
    # Python's 4,300-digit limit in the code Amaranth's simulator compiles: a ValueError there.
    # The limit is lifted while it runs, and put back (it guards model files' parsing).
    import sys
    monkeypatch.setattr(sys, "get_int_max_str_digits", lambda: 4300)
    lifted = []
    monkeypatch.setattr(sys, "set_int_max_str_digits", lambda n: lifted.append(n))
    model = layer_case("linear_chain", "adder", mode="pow2x2", seed=0)
    config = ArrayConfig(pe="adder", rows=2, cols=2, requant_mode="pow2x2", max_k=128,
                         weight_depth=512, act_depth=128, param_depth=64)
    program = compile_model(model, config)
    x = _images(model, 1, seed=0)
    assert check(model, program, x, simulate(program, x, simulator="amaranth")) is None
    assert lifted == [0, 4300]
