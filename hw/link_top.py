"""A small but real device behind the host link, and the top level that puts it on UART pins.

Until the accelerator's top level exists, this is what the simulated board serves and what the
driver's end-to-end tests talk to. :class:`ScratchDevice` implements the device side of
:class:`~addershift.hw.framer.DeviceSignature` the way the accelerator will: memories to write,
results to read, a run command, busy/done/error and performance counters.

Its run computes running sums: ``result[i] = (mem[0] + ... + mem[i]) mod 256`` for ``i < n``
(``n`` is the RUN argument), one byte every two cycles (a memory read, then an add and a write).
Counters, from the run strobe: ``total_cycles = 2n + 1``, ``busy_pe_cycles = n`` (adds),
``stall_cycles = n`` (cycles waiting for a read). ``n`` beyond the memory sets error 1 at once.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw import protocol as P
from .framer import DeviceSignature, Framer
from .uart import UART, uart_divisor

__all__ = ["MEM_REGION", "RESULT_REGION", "ScratchDevice", "LinkTop", "link_identity",
           "ERROR_BAD_LENGTH"]

MEM_REGION = 1
RESULT_REGION = 2
#: The device's error code for a RUN argument beyond the memory.
ERROR_BAD_LENGTH = 1


def link_identity(*, clk_freq, baud, mem_size, max_payload, counter_width=32):
    """The identify block of :class:`LinkTop` (also what the host expects from it)."""
    return P.Identity(
        max_payload=max_payload, clk_hz=int(clk_freq), baud=int(baud), counter_width=counter_width,
        # Like the accelerator: the run's results are read after it (a READ of them during the
        # run is refused with BUSY), its inputs may be read any time (``mem`` has a port of its own).
        regions=(P.Region(MEM_REGION, "mem", mem_size, P.Access.RW | P.Access.LIVE),
                 P.Region(RESULT_REGION, "result", mem_size, P.Access.READ)),
        build={"design": "addershift-link-test", "version": 1, "mem_size": mem_size})


class ScratchDevice(wiring.Component):
    """Two memories (``mem`` written by the host, ``result`` written by runs) and a running-sum unit.

    Parameters
    ----------
    mem_size : int
        Bytes in each memory.
    counter_width : int
        Width of the performance counters.
    """

    def __init__(self, *, mem_size, counter_width=32):
        if isinstance(mem_size, bool) or not isinstance(mem_size, int) \
                or not 1 <= mem_size <= 1 << P.OFFSET_BITS:
            raise ValueError(f"Memory size must be an integer in [1, {1 << P.OFFSET_BITS}], not "
                             f"{mem_size!r}")
        self._mem_size = mem_size
        super().__init__({"bus": In(DeviceSignature(counter_width=counter_width))})

    @property
    def mem_size(self):
        return self._mem_size

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        size = self._mem_size
        m.submodules.mem = mem = Memory(shape=8, depth=size, init=[])
        m.submodules.result = result = Memory(shape=8, depth=size, init=[])
        mem_w = mem.write_port()
        mem_r_bus = mem.read_port(transparent_for=())
        mem_r_run = mem.read_port(transparent_for=())
        res_w = result.write_port()
        res_r_bus = result.read_port(transparent_for=())
        # A read port's enable defaults to 1; the data must hold while the framer waits.
        m.d.comb += [mem_r_bus.en.eq(0), res_r_bus.en.eq(0), mem_r_run.en.eq(0)]

        # Host writes land in ``mem`` (the framer only sends writes inside writable regions).
        m.d.comb += [
            bus.write.ready.eq(1),
            mem_w.addr.eq(bus.write.payload.addr.offset),
            mem_w.data.eq(bus.write.payload.data),
            mem_w.en.eq(bus.write.valid & (bus.write.payload.addr.region == MEM_REGION)),
        ]

        # Host reads: one cycle of memory latency, then the byte is offered until taken.
        pending = Signal()
        region = Signal(8)
        m.d.comb += bus.read_addr.ready.eq(~pending)
        with m.If(bus.read_addr.valid & ~pending):
            m.d.comb += [mem_r_bus.addr.eq(bus.read_addr.payload.offset), mem_r_bus.en.eq(1),
                         res_r_bus.addr.eq(bus.read_addr.payload.offset), res_r_bus.en.eq(1)]
            m.d.sync += [pending.eq(1), region.eq(bus.read_addr.payload.region)]
        m.d.comb += [bus.read_data.valid.eq(pending),
                     bus.read_data.payload.eq(mem_r_bus.data)]
        with m.If(region == RESULT_REGION):
            m.d.comb += bus.read_data.payload.eq(res_r_bus.data)
        with m.If(bus.read_data.valid & bus.read_data.ready):
            m.d.sync += pending.eq(0)

        # The run: result[i] = running sum of mem[0..i].
        # n as wide as i: a run longer than the memory is refused before it is taken.
        n = Signal(range(size + 1))
        i = Signal(range(size + 1))
        acc = Signal(8)
        total, busy_pe, stall = (bus.counters[j] for j in range(3))
        done = Signal()
        error = Signal(8)
        m.d.comb += [bus.done.eq(done), bus.error.eq(error)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(bus.run):
                    m.d.sync += [total.eq(0), busy_pe.eq(0), stall.eq(0), done.eq(0),
                                 error.eq(0), n.eq(bus.run_arg), i.eq(0), acc.eq(0)]
                    with m.If(bus.run_arg > size):
                        m.d.sync += [error.eq(ERROR_BAD_LENGTH), done.eq(1)]
                    with m.Else():
                        m.next = "READ"
            with m.State("READ"):
                m.d.comb += bus.busy.eq(1)
                m.d.sync += total.eq(total + 1)
                with m.If(i == n):
                    m.d.sync += done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += [mem_r_run.addr.eq(i), mem_r_run.en.eq(1)]
                    m.d.sync += stall.eq(stall + 1)
                    m.next = "ADD"
            with m.State("ADD"):
                m.d.comb += bus.busy.eq(1)
                m.d.comb += [res_w.addr.eq(i), res_w.data.eq(acc + mem_r_run.data), res_w.en.eq(1)]
                m.d.sync += [acc.eq(acc + mem_r_run.data), i.eq(i + 1), total.eq(total + 1),
                             busy_pe.eq(busy_pe + 1)]
                m.next = "READ"
        return m


class LinkTop(wiring.Component):
    """UART pins, the framer and the scratch device: the test top level of the host link.

    Parameters
    ----------
    clk_freq : int
        Clock frequency in Hz.
    baud : int
        Line rate (checked with :func:`~addershift.hw.uart.uart_divisor`).
    mem_size : int
        Bytes in each of the device's memories.
    max_payload : int
        Largest request payload (the frame buffer's size).
    timeout : int
        Idle cycles in the middle of a frame before the framer drops it; default 20 ms.

    Members
    -------
    rx : ``In(1)``, the line from the host; tx : ``Out(1)``, the line to the host.
    """
    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __init__(self, *, clk_freq, baud, mem_size=4096, max_payload=256, timeout=None):
        self._divisor = uart_divisor(clk_freq=clk_freq, baud=baud)
        self._identity = link_identity(clk_freq=clk_freq, baud=baud, mem_size=mem_size,
                                       max_payload=max_payload)
        self._timeout = int(clk_freq // 50) if timeout is None else timeout
        self._mem_size = mem_size
        super().__init__()

    @property
    def identity(self):
        return self._identity

    @property
    def divisor(self):
        return self._divisor

    @property
    def timeout(self):
        return self._timeout

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = UART(divisor=self._divisor)
        m.submodules.framer = framer = Framer(identity=self._identity, timeout=self._timeout)
        m.submodules.device = device = ScratchDevice(mem_size=self._mem_size,
                                                     counter_width=self._identity.counter_width)
        wiring.connect(m, uart.rx_data, framer.rx)
        wiring.connect(m, framer.tx, uart.tx_data)
        wiring.connect(m, framer.bus, device.bus)
        m.d.comb += [
            uart.rx.eq(self.rx),
            self.tx.eq(uart.tx),
            framer.rx_lost.eq(uart.frame_error | uart.overrun),
        ]
        return m
