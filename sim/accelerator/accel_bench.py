"""cocotb entry of the accelerator core on Icarus or Verilator: one session of host commands.

Not collected by pytest: ``addershift.sim.accel_sim.simulate`` writes the Verilog, the program file
and the images, runs this file through ``sim/runner.py`` and reads back the JSON it writes. The
session itself (``sim/accel_host.run_session``) is the same one the Amaranth simulator runs.
"""

import json

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from addershift.sim.accel_host import HostPort, run_session
from addershift.sim.runner import bench_params
from addershift.sw.compiler import Program


class CocotbPort(HostPort):
    """Inputs change after a falling edge; outputs are sampled at the falling edge, where
    Icarus and Verilator agree on the values settled after the rising edge."""

    def __init__(self, dut):
        self.dut = dut
        self.cycles = 0

    async def tick(self):
        await FallingEdge(self.dut.clk)
        self.cycles += 1

    def set(self, name, value):
        getattr(self.dut, name).value = value

    def get(self, name):
        return int(getattr(self.dut, name).value)


@cocotb.test()
async def session(dut):
    params = bench_params()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    port = CocotbPort(dut)
    for name in ("bus__write__valid", "bus__read_addr__valid", "bus__read_data__ready",
                 "bus__run", "bus__run_arg", "bus__write__payload", "bus__read_addr__payload"):
        port.set(name, 0)
    dut.rst.value = 1
    for _ in range(3):
        await port.tick()
    dut.rst.value = 0
    jobs = []
    for job in params["jobs"]:
        with open(job["program"], "rb") as f:
            program = Program.from_bytes(f.read())
        result = await run_session(port, program, list(np.load(job["images"])),
                                   per_stage=job["per_stage"])
        for image in result["images"]:
            image["stages"] = {str(k): v.hex() for k, v in image["stages"].items()}
        jobs.append(result)
    with open(params["out"], "w") as f:
        json.dump({"jobs": jobs, "cycles": port.cycles}, f)
