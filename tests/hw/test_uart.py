# amaranth: UnusedElaboratable=no
"""The UART in Amaranth's simulator: divisor checks, exact transmit timing, receive with a +-2% baud
mismatch, framing errors, glitches and overruns. ``sim/uart/`` checks it against cocotbext-uart."""

import random

import pytest
from amaranth.sim import Simulator

from addershift.hw.uart import MIN_DIVISOR, UART, UARTRx, UARTTx, uart_divisor


# --- helpers -----------------------------------------------------------------------------------

def line_levels(frames, bit_cycles, *, lead=20, tail=None):
    """The rx line, one level per clock cycle, for ``frames``: each a byte, a (byte, stop) pair or
    ``None`` for one byte time of idle line.

    Bit edges fall at ``round(j * bit_cycles)``, so a non-integer ``bit_cycles`` models a sender
    whose baud rate is off. Frames follow each other with no idle time.
    """
    bits = []
    for f in frames:
        if f is None:
            bits += [1] * 10
            continue
        byte, stop = f if isinstance(f, tuple) else (f, 1)
        bits += [0] + [(byte >> i) & 1 for i in range(8)] + [stop]
    levels = [1] * lead
    for j, b in enumerate(bits):
        levels += [b] * (round((j + 1) * bit_cycles) - round(j * bit_cycles))
    return levels + [1] * (tail if tail is not None else int(3 * bit_cycles))


def run_rx(levels, *, divisor, take=True):
    """Drive ``levels`` into a UARTRx; return (bytes received, framing errors, overruns)."""
    dut = UARTRx(divisor=divisor)
    got, errors = [], {"frame": 0, "overrun": 0}

    async def drive(ctx):
        for level in levels:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def watch(ctx):
        ctx.set(dut.data.ready, int(take))
        async for _, _, valid, payload, fe, ov in ctx.tick().sample(
                dut.data.valid, dut.data.payload, dut.frame_error, dut.overrun):
            if valid and take:
                got.append(payload)
            errors["frame"] += fe
            errors["overrun"] += ov

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_process(watch)
    sim.run()
    return got, errors["frame"], errors["overrun"]


def decode_line(levels, bit_cycles):
    """An independent reading of a transmitted line: (byte, start cycle) per frame, checked 8N1."""
    out, i = [], 1
    while i < len(levels):
        if levels[i - 1] == 1 and levels[i] == 0:
            mid = [levels[i + int((j + 0.5) * bit_cycles)] for j in range(10)]
            assert mid[0] == 0 and mid[9] == 1, f"bad frame at cycle {i}: {mid}"
            out.append((sum(b << k for k, b in enumerate(mid[1:9])), i))
            i += int(9.5 * bit_cycles)
        i += 1
    return out


# --- divisor -----------------------------------------------------------------------------------

def test_divisor_values():
    assert uart_divisor(clk_freq=12_000_000, baud=115_200) == 104
    assert uart_divisor(clk_freq=25_000_000, baud=1_000_000) == 25
    assert uart_divisor(clk_freq=12_000_000, baud=1_500_000) == MIN_DIVISOR


def test_divisor_errors():
    with pytest.raises(ValueError, match=r"^Baud rate 3000000 is too high for a 12000000 Hz clock: "
                       r"the receiver needs at least 8 clock cycles per bit \(at most 1500000 baud\)$"):
        uart_divisor(clk_freq=12_000_000, baud=3_000_000)
    with pytest.raises(ValueError, match=r"^Baud rate 1300000 is not reachable from a 12000000 Hz "
                       r"clock within 1\.0%: the nearest divisor 9 gives 1333333 baud \(\+2\.56%\)$"):
        uart_divisor(clk_freq=12_000_000, baud=1_300_000)
    with pytest.raises(ValueError, match=r"^Baud rate must be a positive number, not 0$"):
        uart_divisor(clk_freq=12_000_000, baud=0)
    with pytest.raises(ValueError, match=r"^Baud tolerance must be a fraction in \(0, 0\.05\), not 1$"):
        uart_divisor(clk_freq=12_000_000, baud=9600, tolerance=1)


@pytest.mark.parametrize("cls", [UARTTx, UARTRx, UART])
def test_constructor_checks(cls):
    with pytest.raises(ValueError, match=r"^UART divisor must be at least 8, not 7$"):
        cls(divisor=7)
    with pytest.raises(TypeError, match=r"^UART divisor must be an integer, not 8\.0$"):
        cls(divisor=8.0)
    dut = cls(divisor=9)
    assert dut.divisor == 9


# --- transmitter -------------------------------------------------------------------------------

@pytest.mark.parametrize("divisor", [8, 13])
def test_tx_exact_timing_back_to_back(divisor):
    data = [0x00, 0xFF, 0x55, 0xA5, 0x01, 0x80] + [random.Random(divisor).randrange(256)
                                                    for _ in range(6)]
    dut = UARTTx(divisor=divisor)
    levels = []

    async def feed(ctx):
        for b in data:
            ctx.set(dut.data.payload, b)
            ctx.set(dut.data.valid, 1)
            await ctx.tick().until(dut.data.ready)
        ctx.set(dut.data.valid, 0)
        # The last byte waits in the holding register while the one before it goes out.
        await ctx.tick().until(~dut.busy)
        await ctx.tick().repeat(2 * divisor)

    async def watch(ctx):
        async for _, _, tx in ctx.tick().sample(dut.tx):
            levels.append(tx)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_process(watch)
    sim.run()
    frames = decode_line(levels, divisor)
    assert [b for b, _ in frames] == data
    starts = [s for _, s in frames]
    assert all(b - a == 10 * divisor for a, b in zip(starts, starts[1:])), starts  # no gaps


@pytest.mark.parametrize("divisor", [8, 11])
def test_tx_holds_a_second_byte_and_is_busy_until_the_last_stop_bit(divisor):
    """A byte offered while one is on the line is taken at once into the holding register (ready
    falls until the first byte leaves it), and busy stays high until the last stop bit ends."""
    dut = UARTTx(divisor=divisor)
    trace = []

    async def feed(ctx):
        for b in (0x3C, 0xC3):
            ctx.set(dut.data.payload, b)
            ctx.set(dut.data.valid, 1)
            await ctx.tick().until(dut.data.ready)
        ctx.set(dut.data.valid, 0)
        await ctx.tick().repeat(24 * divisor)

    async def watch(ctx):
        async for _, _, tx, ready, busy in ctx.tick().sample(dut.tx, dut.data.ready, dut.busy):
            trace.append((tx, ready, busy))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_process(watch)
    sim.run()
    levels = [t for t, _, _ in trace]
    frames = decode_line(levels, divisor)
    assert [b for b, _ in frames] == [0x3C, 0xC3]
    first, second = (start for _, start in frames)
    assert second - first == 10 * divisor
    # The second byte is taken as the first starts on the line (the first left the holding
    # register for the shift register then), and it waits there until its own start: ready is
    # low in between.
    assert trace[first][1] and trace[second][1]
    assert not any(ready for _, ready, _ in trace[first + 1:second])
    # Busy from the cycle the first byte waits in the holding register, a cycle before its start.
    end = second + 10 * divisor       # the cycle after the second byte's stop bit
    assert all(busy for _, _, busy in trace[first - 1:end])
    assert not any(busy for _, _, busy in trace[end:])


# --- receiver ----------------------------------------------------------------------------------

@pytest.mark.parametrize("divisor, n", [(8, 48), (16, 24), (50, 8)])
@pytest.mark.parametrize("mismatch", [-0.02, 0.0, 0.02])
def test_rx_tolerates_2_percent(divisor, n, mismatch):
    rng = random.Random(divisor * 100 + int(mismatch * 1000))
    data = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(n - 4)]
    got, fe, ov = run_rx(line_levels(data, divisor * (1 + mismatch)), divisor=divisor)
    assert (got, fe, ov) == (data, 0, 0)


@pytest.mark.parametrize("mismatch", [-0.08, 0.08])
def test_rx_fails_far_outside_tolerance(mismatch):
    # The test above can fail: far enough off, the samples leave their bits.
    data = [0x00, 0xFF, 0x55, 0xAA, 0x0F, 0xF0] * 3
    got, fe, ov = run_rx(line_levels(data, 16 * (1 + mismatch)), divisor=16)
    assert got != data or fe > 0


@pytest.mark.parametrize("divisor", [9, 16])
def test_rx_samples_each_bit_at_its_three_cycles(divisor):
    """A bit's samples are taken ``centre - spread``, ``centre`` and ``centre + spread`` cycles
    into it (counted from the start bit's first low level; the synchroniser's delay is the
    same for every sample). A line that holds each data bit's value only at the first and last
    of them, and the opposite level everywhere else, still decodes; a vote taken a cycle early
    or late (or a sample elsewhere) would see the opposite level twice."""
    centre, spread = (divisor - 1) // 2, max(1, divisor // 8)
    data = [0x5A, 0xC3, 0x00, 0xFF]
    levels = [1] * 20
    for byte in data:
        levels += [0] * divisor
        for i in range(8):
            b = (byte >> i) & 1
            bit = [1 - b] * divisor
            bit[centre - spread] = bit[centre + spread] = b
            levels += bit
        levels += [1] * (divisor + 3)
    got, fe, ov = run_rx(levels + [1] * 3 * divisor, divisor=divisor)
    assert (got, fe, ov) == (data, 0, 0)


def test_rx_framing_error_drops_byte_and_recovers():
    # A low stop bit followed at once by a start bit is ambiguous; the line must go idle to recover.
    data = [0x12, (0x34, 0), None, 0x56, 0x78]
    got, fe, ov = run_rx(line_levels(data, 16), divisor=16)
    assert (got, fe, ov) == ([0x12, 0x56, 0x78], 1, 0)


def test_rx_break_is_one_framing_error():
    levels = line_levels([0x11], 16, tail=0) + [0] * (16 * 40) + line_levels([0x22], 16)
    got, fe, ov = run_rx(levels, divisor=16)
    assert (got, fe, ov) == ([0x11, 0x22], 1, 0)


def test_rx_ignores_glitches():
    levels = [1] * 30 + [0] * 5 + [1] * 200 + [0] * 3 + [1] * 100 + line_levels([0x3C], 16)
    got, fe, ov = run_rx(levels, divisor=16)
    assert (got, fe, ov) == ([0x3C], 0, 0)


def test_rx_overrun_keeps_first_byte():
    dut_levels = line_levels([0xC3, 0x99, 0x42], 16)
    got, fe, ov = run_rx(dut_levels, divisor=16, take=False)
    assert (fe, ov) == (0, 2)


def test_rx_payload_holds_while_not_taken():
    # A consumer that takes a byte only every 1.3 byte times: a byte waits while the next one
    # shifts in (and is dropped as an overrun), and must be offered unchanged until taken.
    # (Fails with the payload following the shift register while it is offered.)
    divisor = 9
    sent = [random.Random(5).randrange(256) for _ in range(12)]
    levels = line_levels(sent, divisor)
    dut = UARTRx(divisor=divisor)
    got, offered, overruns = [], [], [0]

    async def drive(ctx):
        for level in levels:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def consume(ctx):
        cycle = 0
        async for _, _, valid, ready, payload, ov in ctx.tick().sample(
                dut.data.valid, dut.data.ready, dut.data.payload, dut.overrun):
            if valid:
                offered.append(payload)
                if ready:
                    got.append(payload)
                    assert len(set(offered)) == 1, f"payload changed while offered: {offered}"
                    offered.clear()
            overruns[0] += ov
            cycle += 1
            ctx.set(dut.data.ready, int(cycle % (13 * divisor) == 0))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_process(consume)
    sim.run()
    assert overruns[0] > 0 and len(got) + overruns[0] == len(sent) - bool(offered)
    it = iter(sent)
    assert all(b in it for b in got), (got, sent)   # in order, none changed


def test_uart_loopback():
    dut = UART(divisor=8)
    data = bytes(random.Random(1).randrange(256) for _ in range(32))
    got = []

    async def feed(ctx):
        for b in data:
            ctx.set(dut.tx_data.payload, b)
            ctx.set(dut.tx_data.valid, 1)
            await ctx.tick().until(dut.tx_data.ready)
        ctx.set(dut.tx_data.valid, 0)
        await ctx.tick().repeat(30 * 8)

    async def loop(ctx):
        ctx.set(dut.rx_data.ready, 1)
        async for _, _, tx, valid, payload in ctx.tick().sample(dut.tx, dut.rx_data.valid,
                                                               dut.rx_data.payload):
            ctx.set(dut.rx, tx)
            if valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_process(loop)
    sim.run()
    assert bytes(got) == data
