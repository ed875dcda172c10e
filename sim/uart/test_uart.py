"""cocotb bench: our UART against cocotbext-uart, an independent UART model, on Icarus and Verilator.

The model sends at the nominal baud and 2% either side (our receiver must take every byte) and
receives what our transmitter sends. A framing error is driven by hand (the model cannot send a
bad stop bit). A byte nobody takes stays offered, unchanged, while later ones are overruns. The
pytest function at the bottom builds the Verilog and runs this file.
"""

import pathlib
import random

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, Timer
from cocotbext.uart import UartSink, UartSource

CLK_NS = 20
DIVISOR = 25   # 500 ns per bit: 2% is exactly 10 ns


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.received = []
        self.frame_errors = 0
        self.overruns = 0
        dut.rx.value = 1
        dut.tx_data__valid.value = 0
        dut.rx_data__ready.value = 1
        cocotb.start_soon(Clock(dut.clk, CLK_NS, unit="ns").start())
        cocotb.start_soon(self._collect())

    async def reset(self):
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def _collect(self):
        # Outputs are sampled on the falling edge (Verilator and Icarus agree there).
        while True:
            await FallingEdge(self.dut.clk)
            if int(self.dut.rx_data__valid.value) and int(self.dut.rx_data__ready.value):
                self.received.append(int(self.dut.rx_data__payload.value))
            self.frame_errors += int(self.dut.frame_error.value)
            self.overruns += int(self.dut.overrun.value)

    async def send(self, data):
        """Offer ``data`` on the transmit stream, one transfer per cycle when ready."""
        for b in data:
            await FallingEdge(self.dut.clk)
            self.dut.tx_data__payload.value = b
            self.dut.tx_data__valid.value = 1
            while not int(self.dut.tx_data__ready.value):
                await FallingEdge(self.dut.clk)
            await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.dut.tx_data__valid.value = 0


def _model_baud(bit_ns):
    # cocotbext-uart times a bit as int(1e9 / baud) ns: aim a little above the integer.
    return 1e9 / (bit_ns + 0.25)


@cocotb.test()
async def rx_from_model_with_mismatch(dut):
    tb = TB(dut)
    await tb.reset()
    rng = random.Random(5)
    for mismatch in (0.0, +0.02, -0.02):
        bit_ns = DIVISOR * CLK_NS * (1 + mismatch)
        source = UartSource(dut.rx, baud=_model_baud(bit_ns), bits=8, stop_bits=1)
        data = bytes([0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(28)])
        tb.received.clear()
        await source.write(data)
        await source.wait()
        await Timer(3 * DIVISOR * CLK_NS, unit="ns")
        assert bytes(tb.received) == data, f"mismatch {mismatch:+.0%}"
        assert (tb.frame_errors, tb.overruns) == (0, 0)
        source._run_cr.cancel()


@cocotb.test()
async def rx_holds_the_offered_byte_until_taken(dut):
    # Nothing taken while three bytes arrive back to back: the first stays offered, unchanged
    # (the receiver's shift register holds the third by then), the other two are overruns.
    tb = TB(dut)
    await tb.reset()
    dut.rx_data__ready.value = 0
    source = UartSource(dut.rx, baud=_model_baud(DIVISOR * CLK_NS), bits=8, stop_bits=1)
    await source.write(bytes([0xA5, 0x3C, 0x0F]))
    await source.wait()
    await Timer(3 * DIVISOR * CLK_NS, unit="ns")
    await FallingEdge(dut.clk)
    assert (int(dut.rx_data__valid.value), int(dut.rx_data__payload.value)) == (1, 0xA5)
    assert (tb.frame_errors, tb.overruns) == (0, 2)
    dut.rx_data__ready.value = 1               # taken at the next edge
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    assert int(dut.rx_data__valid.value) == 0
    await source.write(bytes([0x96]))
    await source.wait()
    await Timer(3 * DIVISOR * CLK_NS, unit="ns")
    assert tb.received == [0x96]
    source._run_cr.cancel()


@cocotb.test()
async def tx_to_model(dut):
    tb = TB(dut)
    await tb.reset()
    sink = UartSink(dut.tx, baud=_model_baud(DIVISOR * CLK_NS), bits=8, stop_bits=1)
    data = bytes(random.Random(7).randrange(256) for _ in range(40))
    start = cocotb.utils.get_sim_time("ns")
    await tb.send(data)
    got = bytearray()
    while len(got) < len(data):   # the model's read(n) returns early: one byte at a time
        await sink.wait()
        got += await sink.read(1)
    assert bytes(got) == data
    elapsed = cocotb.utils.get_sim_time("ns") - start
    # back to back: 10 bits per byte and no gaps (plus the sink's last stop bit wait)
    assert elapsed < (len(data) * 10 + 2) * DIVISOR * CLK_NS


@cocotb.test()
async def framing_error_is_reported(dut):
    tb = TB(dut)
    await tb.reset()
    bit = DIVISOR * CLK_NS

    async def drive(byte, stop):
        for level in [0] + [(byte >> i) & 1 for i in range(8)] + [stop]:
            dut.rx.value = level
            await Timer(bit, unit="ns")
        dut.rx.value = 1

    await drive(0x5A, 1)
    await drive(0x33, 0)
    await Timer(2 * bit, unit="ns")
    await drive(0xC4, 1)
    await Timer(2 * bit, unit="ns")
    assert tb.received == [0x5A, 0xC4]
    assert tb.frame_errors == 1


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_uart_against_model(simulator, tmp_path):
    from amaranth.back import verilog

    from addershift.hw.uart import UART
    from addershift.sim.runner import run_cocotb

    path = tmp_path / "uart_top.v"
    path.write_text(verilog.convert(UART(divisor=DIVISOR), name="uart_top", emit_src=False))
    run_cocotb(simulator=simulator, verilog=path, toplevel="uart_top",
               test_module=pathlib.Path(__file__), build_dir=tmp_path / "build")
