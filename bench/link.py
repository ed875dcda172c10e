"""Host link throughput against the simulated board, and the UART receiver's baud margin.

Weight streaming efficiency = payload bytes per second / (baud / 10), with time measured in the
board's own clock cycles (the uptime counter STATUS reports), so the number is what a real board at
the same clock and baud reaches with a host that answers at once; the simulation's own (wall-clock)
speed is shown next to it. Writes go through the unchanged driver (``Device.write``, verify off,
then one CRC read-back outside the timing), for several windows of outstanding acknowledgements.
Round trips: ECHO with an empty payload and STATUS, one at a time.

    .venv/bin/python bench/link.py                   # 1.5 MBaud at 12 MHz (8 cycles per bit)
    .venv/bin/python bench/link.py --kib 16 --windows 1 8
    .venv/bin/python bench/link.py --uart-margin     # RX tolerance scan (Amaranth simulator)

Simulated-time round trips include the bridge's pacing (it hands bytes over every 16 byte times
while the line is busy), so they are a lower bound for a board.
"""

import argparse
import random
import sys
import time

from addershift.sim.board import BoardProcess
from addershift.sw import protocol as P
from addershift.sw.cli import SIM_MEM_MAX
from addershift.sw.driver import Device

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import int_range, positive_int

#: ``Device``'s window of outstanding acknowledgements is 1 to 64 (``stream`` sets it directly).
MAX_WINDOW = 64


def _cycles(dev):
    return dev.status().uptime


def _delta(a, b, width):
    return (b - a) % (1 << width)


def stream(dev, nbytes, window, rng):
    dev._window = window
    data = bytes(rng.randrange(256) for _ in range(nbytes))
    ident = dev.identity
    resent = dev.stats["resent"]          # (the driver's total since it opened the link)
    t0, c0 = time.monotonic(), _cycles(dev)
    dev.write("mem", 0, data, verify=False)
    c1, t1 = _cycles(dev), time.monotonic()
    assert dev.crc("mem", 0, nbytes) == P.crc32(data), "read-back failed"
    sim_s = _delta(c0, c1, ident.counter_width) / ident.clk_hz
    return {"window": window, "bytes": nbytes, "sim_s": sim_s, "wall_s": t1 - t0,
            "efficiency": nbytes / sim_s / (ident.baud / 10),
            "resent": dev.stats["resent"] - resent}


def round_trips(dev, n, what):
    ident = dev.identity
    t0, c0 = time.monotonic(), _cycles(dev)
    for _ in range(n):
        dev.echo(b"") if what == "ECHO" else dev.status()
    c1, t1 = _cycles(dev), time.monotonic()
    sim_s = _delta(c0, c1, ident.counter_width) / ident.clk_hz
    return {"command": what, "n": n, "per_sim_s": n / sim_s, "per_wall_s": n / (t1 - t0)}


def uart_margin(divisors, step=0.005):
    """The largest baud mismatch (fast and slow sender) the receiver takes without an error."""
    from amaranth.sim import Simulator

    from addershift.hw.uart import UARTRx

    def ok(divisor, mismatch):
        rng = random.Random(int(mismatch * 1e4) + divisor)
        data = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(36)]
        bit = divisor * (1 + mismatch)
        bits = []
        for b in data:
            bits += [0] + [(b >> i) & 1 for i in range(8)] + [1]
        levels = [1] * 20
        for j, v in enumerate(bits):
            levels += [v] * (round((j + 1) * bit) - round(j * bit))
        levels += [1] * (3 * divisor)
        dut = UARTRx(divisor=divisor)
        got, errors = [], [0]

        async def drive(ctx):
            for v in levels:
                ctx.set(dut.rx, v)
                await ctx.tick()

        async def watch(ctx):
            ctx.set(dut.data.ready, 1)
            async for _, _, valid, payload, fe, ov in ctx.tick().sample(
                    dut.data.valid, dut.data.payload, dut.frame_error, dut.overrun):
                if valid:
                    got.append(payload)
                errors[0] += fe + ov

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(drive)
        sim.add_process(watch)
        sim.run()
        return got == data and errors[0] == 0

    rows = []
    for d in divisors:
        row = {"divisor": d}
        for sign, name in ((-1, "fast sender"), (+1, "slow sender")):
            m = 0.0
            while ok(d, sign * (m + step)):
                m += step
            row[name] = m
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--clock", type=positive_int, default=12_000_000, help="clock in Hz")
    p.add_argument("--baud", type=positive_int, default=1_500_000,
                   help="at least 8 clock cycles per bit")
    # The simulated board's scratch memory holds at most SIM_MEM_MAX bytes (serve-sim's limit).
    p.add_argument("--kib", type=int_range(1, SIM_MEM_MAX // 1024), default=16,
                   help="KiB streamed per window size (one write)")
    # A window of 0 sends nothing and waits for ever.
    p.add_argument("--windows", type=int_range(1, MAX_WINDOW), nargs="+", default=[1, 2, 8],
                   help="acknowledgements outstanding")
    p.add_argument("--round-trips", type=positive_int, default=40)
    p.add_argument("--simulator", default="verilator", choices=("verilator", "icarus", "amaranth"))
    p.add_argument("--uart-margin", action="store_true", help="only the UART RX tolerance scan")
    args = p.parse_args(argv)
    from addershift.hw.uart import uart_divisor
    try:        # the check the link top's UART makes, before a board starts
        uart_divisor(clk_freq=args.clock, baud=args.baud)
    except ValueError as e:
        p.error(f"argument --baud: {e}")

    if args.uart_margin:
        print("UART receiver: largest baud mismatch with every byte right (40 bytes back to back, "
              "0.5% steps)")
        print(f"{'divisor':>7} {'fast sender':>12} {'slow sender':>12}")
        for r in uart_margin([8, 16, 50]):
            print(f"{r['divisor']:>7} {-r['fast sender']:>+12.1%} {r['slow sender']:>+12.1%}")
        return 0

    rng = random.Random(0)
    with BoardProcess(simulator=args.simulator, clock=args.clock, baud=args.baud,
                      mem_size=max(16384, args.kib * 1024)) as board:
        with Device(board.url, timeout=20.0) as dev:
            ident = dev.identity
            chunk = ident.max_payload - P.WRITE_HEADER
            frame = chunk + P.WRITE_HEADER + P.REQUEST_OVERHEAD
            print(f"simulated board ({args.simulator}): {ident.baud} baud at {ident.clk_hz} Hz, "
                  f"max payload {ident.max_payload}; a full WRITE frame carries {chunk} of "
                  f"{frame} bytes ({chunk / frame:.1%})")
            print()
            print(f"{'window':>6} {'KiB':>5} {'efficiency':>10} {'sim s':>8} {'wall s':>7} "
                  f"{'wall KiB/s':>10} {'resent':>6}")
            for w in args.windows:
                r = stream(dev, args.kib * 1024, w, rng)
                print(f"{w:>6} {args.kib:>5} {r['efficiency']:>10.1%} {r['sim_s']:>8.4f} "
                      f"{r['wall_s']:>7.1f} {r['bytes'] / 1024 / r['wall_s']:>10.2f} "
                      f"{r['resent']:>6}")
            print()
            print(f"{'command':>7} {'n':>4} {'per sim s':>10} {'per wall s':>10}")
            for what in ("ECHO", "STATUS"):
                r = round_trips(dev, args.round_trips, what)
                print(f"{what:>7} {r['n']:>4} {r['per_sim_s']:>10.0f} {r['per_wall_s']:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
