"""cocotb entry of the simulated board: runs the TCP bridge of ``addershift.sim.board``.

Not a test: ``addershift.sim.board.serve`` builds the harness and runs this file through
``sim/runner.py``; the one "test" serves until its clients are done.
"""

import cocotb

from addershift.sim.board import cocotb_main


@cocotb.test()
async def serve(dut):
    await cocotb_main(dut)
