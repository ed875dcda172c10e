"""The im2col generator's steps against the golden model's im2col, for padding, stride, partial
tiles and channel groups, released with its start or held cycles after it (none emitted before)."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from addershift.hw.config import ArrayConfig
from addershift.hw.im2col import Im2colGenerator
from addershift.sw.compiler import compile_model
from addershift.sw.golden import im2col
from addershift.sw.layer_cases import layer_case


def _steps(config, fields, *, ready_ahead=False, stall_every=0, ready_chance=1.0,
           release_after=0, runs=1, limit=50_000):
    # Steps go from the cycle after `release`: with `start` (release_after=0) or later. The
    # consumer is not ready every `stall_every`-th cycle, and otherwise ready by `ready_chance`.
    # `runs` stages of the same descriptor follow each other (their steps in one list).
    # With `ready_ahead` its ready is a register (as the accelerator's read stage's is), set
    # from the generator's `o_ready_next` input a cycle before (each row's bit of it: the
    # register is row 0's, and the other rows' bits are given the same value).
    gen = Im2colGenerator(config=config, ready_ahead=ready_ahead)
    dut = Module()
    dut.submodules.gen = gen
    if ready_ahead:
        ready_reg = Signal(init=1)
        dut.d.sync += ready_reg.eq(gen.o_ready_next[0])
        dut.d.comb += gen.o.ready.eq(ready_reg)
    steps = []
    chance = np.random.default_rng(1)

    def consumer_ready(cycle):
        return (not (stall_every and cycle % stall_every == 0)
                and chance.random() < ready_chance)

    def offer_ready(ctx, ready):
        """The consumer's ready this cycle (with `ready_ahead`: next cycle's)."""
        if ready_ahead:
            ctx.set(gen.o_ready_next, (1 << config.rows) - 1 if ready else 0)
        else:
            ctx.set(gen.o.ready, ready)

    async def bench(ctx):
        for _ in range(runs):
            await stage(ctx)

    async def stage(ctx):
        ctx.set(gen.desc, fields)
        ctx.set(gen.start, 1)
        ctx.set(gen.release, release_after == 0)
        offer_ready(ctx, 1)
        await ctx.tick()
        ctx.set(gen.start, 0)
        ctx.set(gen.release, 0)
        for cycle in range(1, release_after + 1):
            assert not ctx.get(gen.o.valid), f"a step {cycle} cycles after start, not released"
            ctx.set(gen.release, cycle == release_after)
            await ctx.tick()
        ctx.set(gen.release, 0)
        cycle = 0
        while ctx.get(gen.busy):
            # (a generator whose counters never end must fail, not hang)
            assert cycle < limit, f"still busy after {limit} cycles, {len(steps)} steps"
            offer_ready(ctx, consumer_ready(cycle + ready_ahead))
            if ctx.get(gen.o.ready) and ctx.get(gen.o.valid):
                p = ctx.get(gen.o.payload)
                # (Deep: every row's copy of the lane must be the lane.)
                row_lanes = (list(p.row_lane) if config.read_pipeline == "deep"
                             else [p.lane] * config.rows)
                assert row_lanes == [p.lane] * config.rows, (len(steps), row_lanes, p.lane)
                steps.append((list(p.addr), list(p.valid), p.lane, p.first, p.w_addr, p.last,
                              p.busy))
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return steps


# The counter ends as registers or compares; with the deep pipeline, a consumer whose ready is a
# register's lets each row keep the handshake ("deep-ahead", `Im2colGenerator`'s ready_ahead).
PIPELINES = ["deep", "deep-ahead", "short"]


@pytest.mark.parametrize("case, rows, cols, stall, release_after", [
    ("conv_rect_p2", 3, 2, 0, 0),   # 2x3 kernel, stride 2, padding 2
    ("conv_s2_p0", 4, 4, 3, 9),     # stride 2, back-pressure every third cycle, held a while
    ("gap", 5, 2, 0, 1),            # 16 pixels on 5 rows: a partial last tile
    ("conv_s2_p0", 3, 2, 2, 0),     # 2 channels on 2 lanes: the last channel in the last lane
    ("pool_gap_stride", 3, 2, 0, 12),   # one channel (each step a kernel column's last), held
    ("conv_rect_p2", 1, 3, 2, 4),   # one row: each tile one pixel, the shadow row full at once
    # One row, no padding, released with the start: the first step, the earliest there is, has
    # a valid pixel.
    ("conv_s2_p0", 1, 2, 0, 0),
    # More rows than a tile's 9 steps: each next tile waits for the walker to fill its rows.
    ("pool_gap_stride", 12, 2, 0, 3),
])
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_steps_match_golden_im2col(case, rows, cols, stall, release_after, pipeline):
    _check_steps(case, rows, cols, pipeline, stall_every=stall, release_after=release_after)


@pytest.mark.parametrize("case, rows, cols, ready_chance", [
    ("conv_rect_p2", 3, 2, 0.3),    # stalls of several cycles, steps waiting in the skid
    ("conv_s2_p0", 4, 4, 0.6),
    ("gap", 5, 2, 0.5),
])
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_steps_survive_random_back_pressure(case, rows, cols, ready_chance, pipeline):
    # The stall patterns above are single cycles; these hold the consumer off for several. (A
    # deep skid that drops its waiting step after one cycle passes those and fails these.)
    _check_steps(case, rows, cols, pipeline, ready_chance=ready_chance)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_a_second_stage_waits_for_its_release(pipeline):
    # The generator's state after one stage is the next one's start (the deep rows' copies of
    # the handshake must hold the second stage's steps until its release, long after its
    # first tile is loaded).
    _check_steps("conv_s2_p0", 4, 4, pipeline, ready_chance=0.7, release_after=12, runs=2)


def _check_steps(case, rows, cols, pipeline, runs=1, **consumer):
    model = layer_case(case, "mul")
    config = ArrayConfig(pe="mul", rows=rows, cols=cols, max_k=128,
                         read_pipeline=pipeline.removesuffix("-ahead"))
    stage = compile_model(model, config).stages[0]
    steps = _steps(config, stage.fields, ready_ahead=pipeline.endswith("-ahead"), runs=runs,
                   **consumer)
    cin, h, w = stage.in_shape
    kh, kw = stage.kernel
    x = np.random.default_rng(0).integers(-100, 100, (1, cin, h, w))
    patches, (oh, ow) = im2col(x, stage.kernel, stage.stride, stage.padding)
    pixels, k = oh * ow, cin * kh * kw
    expected_steps = iter(steps)
    for og in list(range(stage.groups)) * runs:
        for t in range(stage.tiles):
            valid_rows = min(rows, pixels - t * rows)
            valid_cols = min(cols, model.layers[0].out_channels - og * cols)
            for a in range(kh):
                for b in range(kw):
                    for c in range(cin):
                        addr, valid, lane, first, w_addr, last, busy = next(expected_steps)
                        assert lane == c % cols
                        assert first == (lane == 0)
                        assert w_addr == stage.w_base + og * k + (a * kw + b) * cin + c
                        assert last == (a == kh - 1 and b == kw - 1 and c == cin - 1)
                        assert busy == valid_rows * valid_cols
                        for r in range(rows):
                            p = t * rows + r
                            want = patches[0, p, c * kh * kw + a * kw + b] if p < pixels else 0
                            got = 0
                            if valid[r]:
                                pix = addr[r] - (c // cols) * h * w
                                assert 0 <= pix < h * w
                                got = x[0, c, pix // w, pix % w]
                            assert got == want, (og, t, a, b, c, r)
    assert next(expected_steps, None) is None
