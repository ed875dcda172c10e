"""Where a build misses its clock: nextpnr's per-net timing reduced to the late endpoints.

nextpnr's ``--detailed-timing-report`` adds ``detailed_net_timings`` to its ``--report`` JSON: for
every net, each endpoint's cell and port and its ``delay`` pair, the second of which is the
latest arrival plus the endpoint's setup time (the slowest endpoint's equals the critical
path's delay). An endpoint whose arrival exceeds the clock period is one the requested clock
fails; a design misses its clock by a few wide nets or by many paths, and the Fmax alone does not
say which. :func:`late_endpoints` counts them by the module and register they end in (Yosys'
and nextpnr's cell names keep the design's hierarchy and signal names) and by the net that
carries them, so the nets to split or pipeline next are named by a rerunnable command
(``addershift build --late-endpoints``).
"""
import collections
import re

# What Yosys and nextpnr append to a signal's name when they map it to cells: the name up to
# these is the design's own.
_MAPPED_SUFFIX = re.compile(r"\$|_TRELLIS_|_DP16KD|_CCU2C|_LUT4|_PFUMX|_L6MUX|_MULT18|_SB_"
                            r"|_ICESTORM_|_OUTREG")


def register_of(cell):
    """The design's name for the register, memory or logic ``cell`` belongs to, with indices
    (``pe_2_27``, ``word3[5]``) as ``N`` so that copies of one register count together."""
    return re.sub(r"\d+", "N", _MAPPED_SUFFIX.split(cell, maxsplit=1)[0]) or cell


def late_endpoints(report, clock_mhz, *, top=10):
    """The endpoints of nextpnr's ``report`` (its ``--report`` JSON with
    ``detailed_net_timings``) that arrive later than the period of ``clock_mhz``.

    Returns ``{"period_ns", "endpoints", "by_register", "by_net"}``: the late endpoints' count,
    the ``top`` registers with most of them (``register`` as :func:`register_of` names it,
    ``endpoints``, ``worst_ns``: the latest arrival with setup) and the ``top`` nets with most
    (``net``, ``driver``: its driving cell, ``fanout``: all its endpoints, ``endpoints``,
    ``worst_ns``). Nets that no clock launches (nextpnr's ``<async>`` event) are left out.
    Raises ``ValueError`` when the report has no per-net timing.
    """
    nets = report.get("detailed_net_timings")
    if nets is None:
        raise ValueError("nextpnr's report has no detailed_net_timings: was nextpnr run with "
                         "--detailed-timing-report?")
    if not clock_mhz or clock_mhz <= 0:
        raise ValueError(f"Clock must be a positive number of MHz, not {clock_mhz!r}")
    period = 1000 / clock_mhz
    registers = collections.defaultdict(lambda: [0, 0.0])
    by_net = []
    total = 0
    for net in nets:
        if net.get("event") == "<async>":
            # Launched by no clock (a button's pad into the reset synchroniser's asynchronous
            # set): its arrival is not held to the period, and the clock's Fmax leaves it out.
            continue
        arrivals = [(e["delay"][1], e["cell"]) for e in net["endpoints"]
                    if e["delay"][1] > period]
        if not arrivals:
            continue
        total += len(arrivals)
        for arrival, cell in arrivals:
            entry = registers[register_of(cell)]
            entry[0] += 1
            entry[1] = max(entry[1], arrival)
        by_net.append({"net": net["net"], "driver": net["driver"],
                       "fanout": len(net["endpoints"]), "endpoints": len(arrivals),
                       "worst_ns": round(max(a for a, _ in arrivals), 2)})
    by_register = [{"register": name, "endpoints": n, "worst_ns": round(worst, 2)}
                   for name, (n, worst) in registers.items()]
    # Most late endpoints first; the later arrival breaks ties, then the name (a stable order).
    by_register.sort(key=lambda r: (-r["endpoints"], -r["worst_ns"], r["register"]))
    by_net.sort(key=lambda r: (-r["endpoints"], -r["worst_ns"], r["net"]))
    return {"period_ns": round(period, 3), "endpoints": total,
            "by_register": by_register[:top], "by_net": by_net[:top]}


def format_late_endpoints(late):
    """Text lines of :func:`late_endpoints`' result (what ``addershift build`` prints)."""
    lines = [f"  late endpoints (arrival after the {late['period_ns']:g} ns period): "
             f"{late['endpoints']:,}"]
    if late["by_register"]:
        lines.append("    by register (endpoints, latest arrival):")
        lines += [f"      {r['endpoints']:>6,}  {r['worst_ns']:6.2f} ns  {r['register']}"
                  for r in late["by_register"]]
        lines.append("    by net (late of fanout, latest arrival):")
        lines += [f"      {r['endpoints']:>6,} of {r['fanout']:<6,} {r['worst_ns']:6.2f} ns  "
                  f"{r['net']}" for r in late["by_net"]]
    return lines
