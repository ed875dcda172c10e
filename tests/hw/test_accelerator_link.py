"""The accelerator core behind the host link's framer (no UART): identify, write the program and
an image, run, poll the status, read the result, all as request frames, in Amaranth's simulator."""

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from addershift.hw.accelerator import Accelerator, AcceleratorTop, accelerator_identity
from addershift.hw.config import ArrayConfig
from addershift.hw.framer import Framer
from addershift.sw import protocol as P
from addershift.sw.compiler import REGIONS, compile_model
from addershift.sw.golden import predict
from addershift.sw.layer_cases import layer_case

MAX = 64


def test_program_and_inference_through_the_framer():
    model = layer_case("conv_s1_p1", "mul", mode="mul")
    config = ArrayConfig(pe="mul", rows=2, cols=2, requant_mode="mul", max_k=32, weight_depth=256,
                         act_depth=128, param_depth=32)
    program = compile_model(model, config)
    identity = accelerator_identity(config, clk_hz=12_000_000, baud=1_500_000, max_payload=MAX)
    m = Module()
    m.submodules.framer = framer = Framer(identity=identity, timeout=10_000)
    m.submodules.core = core = Accelerator(config=config)
    wiring.connect(m, framer.bus, core.bus)
    x = np.random.default_rng(7).integers(0, 128, (1,) + model.input_shape)
    seen = {}

    async def bench(ctx):
        decoder = P.FrameDecoder(kind="response")
        seq = 0

        async def transact(cmd, payload=b"", expect=P.Status.OK):
            nonlocal seq
            seq = (seq + 1) % 256
            ctx.set(framer.tx.ready, 1)
            frames = []
            for byte in P.encode_request(cmd, seq, payload):
                ctx.set(framer.rx.payload, byte)
                ctx.set(framer.rx.valid, 1)
                await ctx.tick().until(framer.rx.ready)
                ctx.set(framer.rx.valid, 0)
            while not frames:
                _, _, valid, byte = await ctx.tick().sample(framer.tx.valid, framer.tx.payload)
                if valid:
                    frames = decoder.feed(bytes([byte]))
            assert frames[0].status == expect, (cmd, frames[0])
            return frames[0].payload

        async def write(region, data):
            for offset in range(0, len(data), MAX - P.WRITE_HEADER):
                chunk = data[offset:offset + MAX - P.WRITE_HEADER]
                await transact(P.Command.WRITE,
                               P.write_payload(P.address(REGIONS[region], offset), chunk))

        seen["identity"] = P.Identity.decode(await transact(P.Command.IDENTIFY))
        for region, data in program.images().items():
            await write(region, data)
        await write("act0", program.input_image(x[0]))
        await transact(P.Command.RUN, P.run_payload(0))
        # While it runs, a memory (not LIVE) refuses a READ (BUSY comes only while busy; the CRC
        # case is in tests/hw/test_framer.py: this run is too short for both; a convolution,
        # since the linear chain's run ended before its READ arrived once the framer's CRC took
        # a cycle more per byte).
        await transact(P.Command.READ, P.read_payload(P.address(REGIONS["act1"], 0), 4),
                       expect=P.Status.BUSY)
        while True:
            status = P.decode_status(await transact(P.Command.STATUS))
            if status.done:
                break
        seen["status"] = status
        region, length = program.output_extent()
        seen["output"] = b""
        for offset in range(0, length, MAX):          # a READ answers at most MAX bytes
            seen["output"] += await transact(P.Command.READ, P.read_payload(
                P.address(REGIONS[region], offset), min(MAX, length - offset)))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen["identity"].build_hash == program.config.build_hash
    assert not seen["status"].busy and seen["status"].error == 0
    assert seen["status"].busy_pe_cycles == program.busy_pe_cycles
    np.testing.assert_array_equal(program.decode_output(seen["output"]), predict(model, x)[0])


def test_top_level_identity():
    config = ArrayConfig(pe="adder", rows=2, cols=2)
    top = AcceleratorTop(config=config, clk_freq=12_000_000, baud=1_500_000)
    assert top.identity.build == config.to_dict()
    assert [(r.name, r.size) for r in top.identity.regions] == [
        # A parameter word holds both lanes' channels: 2 x 38 bits, 16 bytes on the bus.
        ("weights", 4096 * 2), ("params", 256 * 16), ("act0", 512 * 2), ("act1", 512 * 2),
        ("counters", 64 * 4)]
    assert top.divisor == 8
