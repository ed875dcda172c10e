"""The systolic array in Amaranth's simulator against the golden model, its stream behaviour and
timing, and its parameter checks. ``sim/array/`` runs the generated Verilog on Icarus and Verilator.
"""

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module, signed
from amaranth.lib import data
from amaranth.sim import Simulator

from addershift.hw.array import SystolicArray
from addershift.hw.pe import ShiftWeight
from addershift.sim.array_vectors import (exponent_tile, extreme_tiles, golden_tile,
                                          operand_corner_tiles, random_tile, step_payloads, step_words,
                                          unpack_row)
from addershift.sim.streams import stream_put, stream_receive, stream_send
from addershift.sw.numerics import Op, acc_width


def unused(component):
    component._MustUse__silence = True
    return component


# --- driver ------------------------------------------------------------------------------------

def run_array(arr, tiles, *, idle=(0,), stall=(0,), monitor=None):
    """Stream ``tiles`` through ``arr``; return the received rows as ``(acc list, last)``."""
    payloads = [p for tile in tiles for p in step_payloads(arr, tile)]
    received = []

    async def source(ctx):
        await stream_send(ctx, arr.i, payloads, idle=idle)

    finished = []

    async def sink(ctx):
        got = await stream_receive(ctx, arr.o, arr.rows * len(tiles), stall=stall)
        received.extend(got)
        finished.append(True)

    async def watchdog(ctx):
        # A lost result would leave the sink waiting forever.
        for _ in range(limit):
            if finished:
                return
            await ctx.tick()
        raise AssertionError(f"only {len(received)} rows after {limit} cycles")

    limit = 20 * (len(payloads) + arr.rows * len(tiles)) + 200
    sim = Simulator(arr)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.add_testbench(watchdog)
    if monitor is not None:
        sim.add_testbench(monitor, background=True)
    sim.run()
    return [([int(v) for v in p.acc], int(p.last)) for p in received]


def check_array(arr, tiles, **kwargs):
    rows = run_array(arr, tiles, **kwargs)
    assert len(rows) == arr.rows * len(tiles)
    for t, tile in enumerate(tiles):
        expected = golden_tile(arr, tile)
        got = rows[t * arr.rows:(t + 1) * arr.rows]
        assert [last for _, last in got] == [0] * (arr.rows - 1) + [1], f"tile {t}: last flags"
        np.testing.assert_array_equal(np.array([acc for acc, _ in got]), expected,
                                      err_msg=f"tile {t}")


# --- simulations -------------------------------------------------------------------------------

# Arrays of one tile drive `o` from the result chain; larger ones through a queue of three
# output registers (a cycle more latency) and have their control copied per tile and row, each tile with its own
# reset register. TILE=2 makes small arrays take the second form.
TILE_SIZES = pytest.mark.parametrize("tile", [8, 2], ids=["one-tile", "tiles"])


@pytest.mark.parametrize("kind,rows,cols,params", [
    ("adder", 3, 4, dict(max_length=40)),
    ("adder", 1, 1, dict(x_bits=5, max_length=9)),
    ("adder", 8, 2, dict(max_length=20)),
    ("shift", 2, 5, dict(max_length=30)),
    ("shift", 4, 1, dict(x_bits=6, p_min=-2, p_max=3, max_length=12)),
    ("mul", 5, 3, dict(max_length=25)),
    ("mul", 1, 6, dict(x_bits=4, w_bits=7, max_length=16)),
    ("adder", 3, 33, dict(max_length=6)),    # five tiles in a row
])
def test_array_against_golden(kind, rows, cols, params):
    rng = np.random.default_rng(rows * 100 + cols)
    arr = SystolicArray(kind=kind, rows=rows, cols=cols, **params)
    ks = [1, arr.max_length, 2] + list(rng.integers(1, arr.max_length + 1, size=5))
    tiles = ([random_tile(arr, int(k), rng) for k in ks] + list(extreme_tiles(arr)) +
             list(operand_corner_tiles(arr, 3)))
    if arr.kind is Op.SHIFT:
        tiles.append(exponent_tile(arr))
    # Idle source and back-pressured sink, in a pattern that drifts against the tile lengths.
    check_array(arr, tiles, idle=(0, 0, 1, 0, 3), stall=(0, 2, 0, 0, 0, 7))


@pytest.mark.parametrize("seed", range(6))
def test_output_under_random_back_pressure(seed, monkeypatch):
    """Several tiles: rows pile up in the output registers and leave them in order, whatever the
    sink's pattern; short reductions, so that rows are taken in every state of the output queue."""
    import addershift.hw.array as array_module
    monkeypatch.setattr(array_module, "TILE", 2)
    rng = np.random.default_rng(seed)
    arr = SystolicArray(kind="adder", rows=5, cols=3, max_length=8)
    tiles = [random_tile(arr, int(k), rng) for k in rng.integers(1, 9, size=14)]
    check_array(arr, tiles, stall=tuple(int(v) for v in rng.integers(0, 3, size=23)))


@pytest.mark.parametrize("kind", ["adder", "shift", "mul"])
def test_array_full_speed(kind):
    """Back-to-back tiles with an always-ready sink and a never-idle source."""
    rng = np.random.default_rng(5)
    arr = SystolicArray(kind=kind, rows=4, cols=3, max_length=12)
    tiles = [random_tile(arr, int(k), rng) for k in (3, 12, 1, 1, 4, 7, 2, 12)]
    check_array(arr, tiles)


def test_tiles_with_their_own_control_and_operands(monkeypatch):
    """Tiles of 2x2 PEs (the last row a tile of its own), each with its own copy of the read-out
    and PE control and of its operand registers."""
    import addershift.hw.array as array_module
    monkeypatch.setattr(array_module, "TILE", 2)
    rng = np.random.default_rng(11)
    arr = SystolicArray(kind="adder", rows=7, cols=2, max_length=9)
    tiles = [random_tile(arr, int(k), rng) for k in (1, 9, 3, 7, 2, 5)]
    check_array(arr, tiles, idle=(0, 1, 0), stall=(0, 0, 3, 0, 9))
    check_array(arr, tiles)


@TILE_SIZES
@pytest.mark.parametrize("reset_cycles", [1, 2])
def test_reset_mid_reduction_starts_clean(tile, reset_cycles, monkeypatch):
    """A reset with a finished result unread and a reduction half summed: both are dropped. The
    array's own reset is a register later than the design's, so ``i.ready`` stays low for one
    cycle after it; then the next tiles sum from zero (the accumulators have no reset: the
    control clears them while the reset lasts, however short)."""
    import addershift.hw.array as array_module
    monkeypatch.setattr(array_module, "TILE", tile)
    rng = np.random.default_rng(13)
    arr = SystolicArray(kind="adder", rows=3, cols=3, max_length=10, ready_next=True)
    top = Module()
    top.domains.sync = domain = ClockDomain()
    top.submodules.arr = arr
    finished, partial = random_tile(arr, 6, rng), random_tile(arr, 8, rng)
    after = [random_tile(arr, k, rng) for k in (3, 10, 1)]
    received, reset_done = [], []

    async def source(ctx):
        for payload in step_payloads(arr, finished) + step_payloads(arr, partial)[:5]:
            await stream_put(ctx, arr.i, payload)
        # A `last` step shown (not valid) across the reset: with a result unread before it, the
        # array's next ready must count the reset's clearing of the read-out.
        ctx.set(arr.i.payload, step_payloads(arr, finished)[-1])
        ctx.set(domain.rst, 1)
        for _ in range(reset_cycles):   # single ticks: a repeated wait raises DomainReset
            await ctx.tick()
        ctx.set(domain.rst, 0)
        # The row from before the reset must not be offered in the cycle after it either.
        assert (ctx.get(arr.i.ready), ctx.get(arr.o.valid)) == (0, 0)
        await ctx.tick()
        assert (ctx.get(arr.i.ready), ctx.get(arr.o.valid)) == (1, 0)
        await ctx.tick()
        reset_done.append(True)
        await stream_send(ctx, arr.i, [p for tile in after for p in step_payloads(arr, tile)])

    async def sink(ctx):
        while not reset_done:
            await ctx.tick()
        # The first result after the reset waits at the output (registers that kept their state
        # across the reset would show through here).
        for _ in range(30):
            await ctx.tick()
        received.extend(await stream_receive(ctx, arr.o, arr.rows * len(after)))

    checked = []

    async def next_ready(ctx):
        # Through the reset too, `i_ready_next_*` are the next cycle's `i.ready`.
        before = None
        async for _, _, ready, last, *ready_next in ctx.tick().sample(
                arr.i.ready, arr.i.payload.last, arr.i_ready_next_other, arr.i_ready_next_last):
            if before is not None:
                assert ready == before[last], f"cycle {len(checked)}"
            checked.append(ready)
            before = ready_next

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.add_testbench(next_ready, background=True)
    sim.run_until(1e-6 * 500)
    assert len(checked) > 400 and 0 in checked
    assert len(received) == arr.rows * len(after)
    got = np.array([[int(v) for v in p.acc] for p in received])
    np.testing.assert_array_equal(got, np.concatenate([golden_tile(arr, t) for t in after]))


def test_array_blocked_output_keeps_every_result():
    """The sink takes nothing for a long time, then drains: no result is lost or changed."""
    rng = np.random.default_rng(9)
    arr = SystolicArray(kind="adder", rows=3, cols=2, max_length=8)
    tiles = [random_tile(arr, int(k), rng) for k in (2, 1, 5, 3)]
    check_array(arr, tiles, stall=(60, 0, 0, 0, 25, 0))


def _timeline(arr, tiles, *, ready=lambda cycle: 1, cycles=None):
    """Cycle-by-cycle record of one run: dicts with i_valid, i_ready, o_valid, o_ready, o_last."""
    payloads = [p for tile in tiles for p in step_payloads(arr, tile)]
    cycles = cycles or len(payloads) * 3 + 40
    trace = []

    async def bench(ctx):
        it = iter(payloads)
        current = next(it, None)
        for cycle in range(cycles):
            if current is not None:
                ctx.set(arr.i.payload, current)
            ctx.set(arr.i.valid, current is not None)
            ctx.set(arr.o.ready, ready(cycle))
            row = {"i_valid": ctx.get(arr.i.valid), "i_ready": ctx.get(arr.i.ready),
                   "o_valid": ctx.get(arr.o.valid), "o_ready": ctx.get(arr.o.ready),
                   "o_last": ctx.get(arr.o.payload.last),
                   "offered_last": ctx.get(arr.i.payload.last),
                   "o_acc": [int(v) for v in ctx.get(arr.o.payload.acc)]}
            if arr.i_ready_next_last is not None:
                row["ready_next"] = (ctx.get(arr.i_ready_next_other),
                                     ctx.get(arr.i_ready_next_last))
            row["i_take"] = row["i_valid"] and row["i_ready"]
            row["i_last_shown"] = bool(row["i_valid"] and current["last"])
            row["i_last"] = bool(row["i_take"] and current["last"])
            trace.append(row)
            await ctx.tick()
            if row["i_take"]:
                current = next(it, None)

    sim = Simulator(arr)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return trace


@TILE_SIZES
def test_latency_and_throughput_properties(tile, monkeypatch):
    import addershift.hw.array as array_module
    monkeypatch.setattr(array_module, "TILE", tile)
    rng = np.random.default_rng(3)
    for rows in (1, 4):
        arr = SystolicArray(kind="adder", rows=rows, cols=2, max_length=16)
        # Short reductions wait for the result chain at their `last` step, long ones do not.
        ks = [rows - 1 or 1, 5, 16, rows - 1 or 1, 1, 9, 8, 7, 6, 5]
        tiles = [random_tile(arr, k, rng) for k in ks]
        trace = _timeline(arr, tiles)
        lasts = [t for t, r in enumerate(trace) if r["i_last"]]
        firsts = [t for t, r in enumerate(trace) if r["o_valid"] and
                  (t == 0 or not trace[t - 1]["o_valid"] or trace[t - 1]["o_last"])]
        # Row 0 of each result appears `latency` cycles after its last step was taken.
        assert firsts == [t + arr.latency for t in lasts]
        # The input is refused in the idle cycle after each `last`, and else only while a `last`
        # step waits; so reductions take reduction_cycles(K) input cycles each.
        refused = [t for t, r in enumerate(trace) if r["i_valid"] and not r["i_ready"]]
        idle = [t + arr.idle_after_last for t in lasts[:-1]]
        assert set(idle) <= set(refused)
        assert all(trace[t]["i_last_shown"] for t in refused if t not in idle)
        assert [lasts[i + 1] - lasts[i] for i in range(len(ks) - 1)] == \
            [arr.reduction_cycles(k) for k in ks[1:]]
        # Exactly the reductions shorter than rows + (cycles to load a result) wait.
        load_delay = arr.latency - 1 - (tile < 8 and rows > tile)
        assert [arr.reduction_cycles(k) > k + 1 for k in ks] == \
            [k < rows + load_delay for k in ks]
        assert any(k < rows + load_delay for k in ks) and any(k >= rows + load_delay for k in ks)


@TILE_SIZES
def test_back_pressure_stalls_input_only_when_it_must(tile, monkeypatch):
    """Readout slower than the tiles: only `last` steps wait, while a result is unread."""
    import addershift.hw.array as array_module
    monkeypatch.setattr(array_module, "TILE", tile)
    rng = np.random.default_rng(4)
    arr = SystolicArray(kind="mul", rows=4, cols=2, max_length=8)
    tiles = [random_tile(arr, 1, rng) for _ in range(6)]
    # The sink takes one row every third cycle: 12 cycles per result, 2 cycles per tile in.
    trace = _timeline(arr, tiles, ready=lambda cycle: int(cycle % 3 == 0), cycles=200)
    # Stream rules on the output: once valid, valid and payload hold until taken.
    for a, b in zip(trace, trace[1:]):
        if a["o_valid"] and not a["o_ready"]:
            assert b["o_valid"] and b["o_acc"] == a["o_acc"] and b["o_last"] == a["o_last"]
    # The input is refused only (a) in the idle cycle after a `last`, or (b) on a `last` step
    # while a previous result is unread (the output is valid) or on its way to the result chain
    # (its `last` step was taken at most `latency` cycles ago).
    lasts = [t for t, r in enumerate(trace) if r["i_last"]]
    for t, r in enumerate(trace):
        if r["i_valid"] and not r["i_ready"] and t - 1 not in lasts:
            assert r["i_last_shown"], f"cycle {t}: a step other than `last` waited"
            assert r["o_valid"] or any(t - arr.latency <= s < t for s in lasts), \
                f"cycle {t}: a `last` step waited with nothing to read out"
    outputs = [r["o_acc"] for r in trace if r["o_valid"] and r["o_ready"]]
    expected = np.concatenate([golden_tile(arr, tile) for tile in tiles])
    np.testing.assert_array_equal(np.array(outputs), expected)


@TILE_SIZES
def test_no_combinational_path_from_output_ready_to_input_ready(tile, monkeypatch):
    """``i.ready`` and ``o.valid`` must not change when only ``o.ready`` does, in any state."""
    import addershift.hw.array as array_module
    monkeypatch.setattr(array_module, "TILE", tile)
    rng = np.random.default_rng(6)
    arr = SystolicArray(kind="adder", rows=3, cols=2, max_length=4)
    payloads = [p for k in (1, 3, 2, 4) * 2 for p in step_payloads(arr, random_tile(arr, k, rng))]
    seen = []

    async def bench(ctx):
        ctx.set(arr.i.valid, 1)
        for cycle in range(120):
            ctx.set(arr.i.payload, payloads[cycle % len(payloads)])
            observed = []
            for ready in (0, 1):
                ctx.set(arr.o.ready, ready)
                observed.append((ctx.get(arr.i.ready), ctx.get(arr.o.valid)))
            assert observed[0] == observed[1], f"cycle {cycle}: {observed}"
            seen.append(observed[0])
            ctx.set(arr.o.ready, int(rng.integers(0, 4) == 0))   # mostly back-pressure
            await ctx.tick()

    sim = Simulator(arr)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert (0, 1) in seen and (1, 1) in seen     # both stalled and flowing states were visited


@TILE_SIZES
def test_next_ready_is_the_ready_of_the_next_cycle(tile, monkeypatch):
    """``i_ready_next_last`` / ``i_ready_next_other`` are ``i.ready`` one cycle later, chosen by
    the ``last`` then offered (a consumer's registered copy of the ready relies on it), through
    idle cycles, `last` steps and steps waiting for the read-out (a reset: the test above). Without
    ``ready_next`` the array has none."""
    import addershift.hw.array as array_module
    monkeypatch.setattr(array_module, "TILE", tile)
    rng = np.random.default_rng(8)
    arr = SystolicArray(kind="adder", rows=4, cols=3, max_length=8, ready_next=True)
    tiles = [random_tile(arr, k, rng) for k in (1, 8, 2, 1, 5, 1, 3)]
    trace = _timeline(arr, tiles, ready=lambda cycle: int(cycle % 5 == 0), cycles=160)
    for t, (now, later) in enumerate(zip(trace, trace[1:])):
        assert later["i_ready"] == now["ready_next"][later["offered_last"]], f"cycle {t}"
    assert {r["i_ready"] for r in trace} == {0, 1}
    assert any(r["offered_last"] and not r["i_ready"] for r, s in zip(trace[1:], trace)
               if not s["i_last"])   # a `last` step waited for the read-out
    plain = unused(SystolicArray(kind="adder", rows=4, cols=3, max_length=8))
    assert (plain.i_ready_next_last, plain.i_ready_next_other) == (None, None)


# --- parameters --------------------------------------------------------------------------------

def test_properties_and_layouts():
    arr = unused(SystolicArray(kind="shift", rows=3, cols=2, p_min=-1, p_max=4, max_length=50))
    assert (arr.kind, arr.rows, arr.cols, arr.x_bits, arr.w_bits) == (Op.SHIFT, 3, 2, 8, None)
    assert (arr.p_min, arr.p_max, arr.max_length) == (-1, 4, 50)
    assert arr.acc_bits == acc_width("shift", 50, x_bits=8, p_min=-1, p_max=4)
    assert arr.weight_shape == ShiftWeight(p_min=-1, p_max=4)
    assert arr.in_layout == data.StructLayout({
        "x": data.ArrayLayout(signed(8), 3), "w": data.ArrayLayout(ShiftWeight(p_min=-1, p_max=4), 2),
        "last": 1})
    assert arr.out_layout == data.StructLayout({"acc": data.ArrayLayout(signed(arr.acc_bits), 2),
                                                "last": 1})
    assert (arr.latency, arr.readout_cycles, arr.idle_after_last) == (4, 3, 1)
    assert arr.reduction_cycles(1) == 7 and arr.reduction_cycles(9) == 10
    for name in ("rows", "cols", "latency", "acc_bits", "kind"):
        with pytest.raises(AttributeError):
            setattr(arr, name, 2)
    assert unused(SystolicArray(kind="adder", rows=8, cols=8)).acc_bits == 16
    assert unused(SystolicArray(kind=Op.MUL, rows=1, cols=1)).w_bits == 8


@pytest.mark.parametrize("params,exc,message", [
    (dict(kind="adder", rows=0, cols=4), ValueError, "Array rows must be between 1 and 64, not 0"),
    (dict(kind="adder", rows=4, cols=65), ValueError,
     "Array cols must be between 1 and 64, not 65"),
    (dict(kind="adder", rows="4", cols=4), TypeError, "Array rows must be an integer, not '4'"),
    (dict(kind="adder", rows=4, cols=2.0), TypeError, "Array cols must be an integer, not 2.0"),
    (dict(kind="L1", rows=4, cols=4), ValueError,
     "PE kind must be one of adder, shift, mul, not 'L1'"),
    (dict(kind="adder", rows=4, cols=4, x_bits=0), ValueError,
     "x_bits must be between 2 and 32, not 0"),
    (dict(kind="adder", rows=4, cols=4, max_length=-3), ValueError,
     "max_length must be at least 1, not -3"),
    (dict(kind="mul", rows=4, cols=4, p_max=3), ValueError,
     "p_min and p_max apply to shift PEs only, not to 'mul' (got p_min=None, p_max=3)"),
    (dict(kind="shift", rows=4, cols=4, p_min=5, p_max=4), ValueError,
     "p_max must be at least p_min (5), not 4"),
])
def test_parameter_messages(params, exc, message):
    with pytest.raises(exc) as info:
        SystolicArray(**params)
    assert str(info.value) == message


def test_packed_words_match_the_layouts():
    """The Verilog benches' packing agrees with Amaranth's own view of the payload."""
    rng = np.random.default_rng(11)
    for kind, params in (("shift", dict(p_min=-2, p_max=3)), ("adder", {}), ("mul", {"w_bits": 5})):
        arr = unused(SystolicArray(kind=kind, rows=3, cols=2, max_length=9, **params))
        tile = random_tile(arr, 4, rng)
        for payload, word in zip(step_payloads(arr, tile), step_words(arr, tile)):
            assert arr.in_layout.const(payload).as_value().value == word
        row = {"acc": [-(1 << (arr.acc_bits - 1)), (1 << (arr.acc_bits - 1)) - 1], "last": 1}
        assert unpack_row(arr, arr.out_layout.const(row).as_value().value) == (row["acc"], 1)
