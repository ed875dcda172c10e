"""The late endpoints of nextpnr's per-net timing, on hand-made reports (a real build's are
checked in test_cli_boards.py)."""

import pytest

from addershift.boards.late_endpoints import format_late_endpoints, late_endpoints, register_of


def _net(name, driver, *arrivals, cell="core.r_TRELLIS_FF_Q", event="posedge clk"):
    """A ``detailed_net_timings`` entry whose endpoints arrive at ``arrivals`` (ns, with setup);
    ``cell`` may be one name or one per endpoint; ``event`` launches the net."""
    cells = [cell] * len(arrivals) if isinstance(cell, str) else cell
    return {"net": name, "driver": driver, "port": "Q", "event": event, "sources": [],
            "endpoints": [{"cell": c, "port": "CE", "event": "posedge clk", "delay": [0.5, a]}
                          for c, a in zip(cells, arrivals)]}


@pytest.mark.parametrize("cell, register", [
    ("core.core.held_weights0_TRELLIS_FF_Q_254", "core.core.held_weightsN"),
    ("core.core.array.acc$5196_TRELLIS_FF_Q_9", "core.core.array.acc"),
    ("core.core.act1_rows.bank9.0.0_CEB_LUT4_Z", "core.core.actN_rows.bankN.N.N_CEB"),
    ("core.core.act0.bank3.0.0", "core.core.actN.bankN.N.N"),
    ("core.core.wb.word3[5]_SB_DFFE_Q", "core.core.wb.wordN[N]"),
    ("$auto$alumacc.cc:485$1234", "$auto$alumacc.cc:485$1234"),
])
def test_register_of_keeps_the_designs_name(cell, register):
    assert register_of(cell) == register


def test_late_endpoints_count_by_register_and_by_net():
    report = {"detailed_net_timings": [
        # A wide enable: three of its four endpoints late, in two copies of one register.
        _net("core.en", "core.en_TRELLIS_FF_Q", 11.0, 12.5, 9.0, 10.5,
             cell=["core.row3_TRELLIS_FF_Q_1", "core.row12_TRELLIS_FF_Q", "core.row0_TRELLIS_FF_Q",
                   "core.other_TRELLIS_FF_Q"]),
        # On time (an arrival of exactly the period meets it).
        _net("core.a", "core.a_TRELLIS_FF_Q", 10.0, 3.0),
        _net("core.b", "core.b_LUT4_Z", 10.25, cell="core.other_TRELLIS_FF_Q_7"),
    ]}
    late = late_endpoints(report, 100)
    assert late["period_ns"] == 10 and late["endpoints"] == 4
    assert late["by_register"] == [
        {"register": "core.rowN", "endpoints": 2, "worst_ns": 12.5},
        {"register": "core.other", "endpoints": 2, "worst_ns": 10.5}]
    assert late["by_net"] == [
        {"net": "core.en", "driver": "core.en_TRELLIS_FF_Q", "fanout": 4, "endpoints": 3,
         "worst_ns": 12.5},
        {"net": "core.b", "driver": "core.b_LUT4_Z", "fanout": 1, "endpoints": 1,
         "worst_ns": 10.25}]
    # Only the top entries are kept; the total still counts every late endpoint.
    short = late_endpoints(report, 100, top=1)
    assert [r["register"] for r in short["by_register"]] == ["core.rowN"]
    assert [r["net"] for r in short["by_net"]] == ["core.en"] and short["endpoints"] == 4
    text = "\n".join(format_late_endpoints(late))
    assert "late endpoints (arrival after the 10 ns period): 4" in text
    assert "     2   12.50 ns  core.rowN" in text
    assert "     3 of 4       12.50 ns  core.en" in text


def test_a_design_that_meets_its_clock_has_none():
    late = late_endpoints({"detailed_net_timings": [_net("n", "d", 4.0, 7.5)]}, 100)
    assert late == {"period_ns": 10, "endpoints": 0, "by_register": [], "by_net": []}
    assert format_late_endpoints(late) == [
        "  late endpoints (arrival after the 10 ns period): 0"]


def test_a_net_no_clock_launches_is_not_late():
    # As a 32x32 ECP5 build reported it: the button's pad through a LUT into the reset
    # synchroniser's asynchronous set, 11.2 ns "late" against a 10 ns clock it is not timed to.
    button = _net("reset_button.buf.i_LUT4_D_Z", "reset_button.buf.i_LUT4_D", 11.2, 11.2,
                  event="<async>")
    late = late_endpoints({"detailed_net_timings": [button, _net("core.a", "core.d", 10.5)]}, 100)
    assert late["endpoints"] == 1
    assert [r["net"] for r in late["by_net"]] == ["core.a"]


def test_a_report_without_per_net_timing_says_what_is_missing():
    with pytest.raises(ValueError, match=r"no detailed_net_timings: was nextpnr run with "
                                         r"--detailed-timing-report\?"):
        late_endpoints({"fmax": {}}, 100)
    with pytest.raises(ValueError, match=r"Clock must be a positive number of MHz, not 0"):
        late_endpoints({"detailed_net_timings": []}, 0)
