"""One host-side script for every simulator of the accelerator core: load a program, run images.

:func:`run_session` drives the core's host interface (byte bus, run, status) through a small
:class:`HostPort` adapter, so the Amaranth testbench and the cocotb bench (Icarus, Verilator) run
exactly the same sequence: write the program's memory images, then per image write the input, run
(all stages at once, or one stage at a time to read every stage's output), read the output and the
per-stage counters. The result is plain data (lists and ints) for ``sw.accel_sim`` to compare.
"""

from __future__ import annotations

__all__ = ["HostPort", "run_session"]

from ..sw.compiler import PERF_COUNTERS, PERF_STAGES, REGIONS


class HostPort:
    """What :func:`run_session` needs from a simulator: ``await tick()`` (one clock cycle; values
    set before it are seen at the clock edge, values read after it are those settled after the
    edge), ``set(name, value)`` and ``get(name)`` on the core's ports, named as the Verilog
    ports of ``hw.accelerator.Accelerator`` are (``bus__write__valid``, ``bus__run_arg``, ...)."""

    async def tick(self):
        raise NotImplementedError

    def set(self, name, value):
        raise NotImplementedError

    def get(self, name):
        raise NotImplementedError


def _address(region, offset):
    return REGIONS[region] << 24 | offset


async def write_bytes(port, region, offset, data):
    """One byte per cycle (the core's write stream is always ready)."""
    port.set("bus__write__valid", 1)
    for i, byte in enumerate(data):
        port.set("bus__write__payload", _address(region, offset + i) | byte << 32)
        await port.tick()
    port.set("bus__write__valid", 0)


#: Cycles a read may take from its address to its byte (the core takes two, five with the deep
#: read pipeline).
READ_LATENCY_MAX = 8


async def read_bytes(port, region, offset, length):
    """One byte at a time: the address is taken (when the core is ready for it: not in the
    two cycles after a write, with the deep read pipeline), its word read, then its byte offered
    (from a register) and taken."""
    out = bytearray()
    port.set("bus__read_data__ready", 1)
    for i in range(length):
        port.set("bus__read_addr__valid", 1)
        port.set("bus__read_addr__payload", _address(region, offset + i))
        for _ in range(READ_LATENCY_MAX):
            taken = port.get("bus__read_addr__ready")
            await port.tick()
            if taken:
                break
        else:
            raise RuntimeError(f"reading {region} at {offset + i} not taken in "
                               f"{READ_LATENCY_MAX} cycles")
        port.set("bus__read_addr__valid", 0)
        for _ in range(READ_LATENCY_MAX):
            await port.tick()
            if port.get("bus__read_data__valid"):
                break
        else:
            raise RuntimeError(f"no byte {READ_LATENCY_MAX} cycles after reading {region} at "
                               f"{offset + i}")
        out.append(port.get("bus__read_data__payload"))
        await port.tick()
    port.set("bus__read_data__ready", 0)
    return bytes(out)


async def start_run(port, *, start=0, count=0):
    """The run strobe for one cycle: ``count`` stages from ``start`` (0: to the program's end)."""
    port.set("bus__run_arg", start | count << 8)
    port.set("bus__run", 1)
    await port.tick()
    port.set("bus__run", 0)


async def run_stages(port, *, start=0, count=0, timeout=10_000_000):
    await start_run(port, start=start, count=count)
    for _ in range(timeout):
        await port.tick()
        if port.get("bus__done"):
            return port.get("bus__error")
    raise TimeoutError(f"the accelerator did not finish within {timeout} cycles")


async def read_counters(port, program, stages):
    cb = -(-program.config.counter_bits // 8)
    stride = 1 << (cb - 1).bit_length()
    n = min(stages, PERF_STAGES)
    raw = await read_bytes(port, "counters", 0, 4 * n * stride)
    words = [int.from_bytes(raw[i * stride:i * stride + cb], "little") for i in range(4 * n)]
    return [dict(zip(PERF_COUNTERS, words[4 * s:4 * s + 4])) for s in range(n)]


async def run_session(port, program, images, *, per_stage=False):
    """Load ``program``, then run every image of ``images`` (a list of ``(C, H, W)`` int arrays).

    Returns ``{"images": [{"stages": {index: bytes of its output}, "error": int,
    "counters": [per run: [per stage: {counter: value}]]}]}`` (counters cumulative within a run);
    with ``per_stage`` every stage runs on its own and its output is read, else the stages run at
    once and only the last output is read.
    """
    for region, data in program.images().items():
        await write_bytes(port, region, 0, data)
    results = []
    n = len(program.stages)
    for x in images:
        await write_bytes(port, "act0", 0, program.input_image(x))
        outputs, counters, error = {}, [], 0
        runs = [(s, 1) for s in range(n)] if per_stage else [(0, 0)]
        for start, count in runs:
            # A generous bound on the run's cycles (the digits network takes under three per
            # k-step issued), so that a design that hangs fails in seconds, not hours.
            stop = start + count if count else n
            steps = sum(s.issue_cycles for s in program.stages[start:stop])
            error = await run_stages(port, start=start, count=count,
                                     timeout=10_000 + 100 * steps)
            if error:
                break
            ran = 1 if count else n
            counters.append(await read_counters(port, program, ran))
            last = start + ran - 1
            region, length = program.output_extent(last)
            outputs[last] = await read_bytes(port, region, 0, length)
        results.append({"stages": outputs, "error": error, "counters": counters})
    return {"images": results}
