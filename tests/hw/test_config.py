"""The build configuration: validation messages, derived widths and the stable hash."""

import pytest

from addershift.hw.config import ArrayConfig, requant_lane_fields
from addershift.sw.numerics import acc_width


def test_derived_widths():
    c = ArrayConfig(pe="adder", rows=4, cols=8, max_k=72)
    assert c.acc_bits == acc_width("adder", 72, x_bits=8, w_bits=8) == 16
    assert (c.weight_word_bits, c.act_word_bits, c.weight_word_bytes) == (64, 64, 8)
    s = ArrayConfig(pe="shift", rows=2, cols=3, p_min=-4, p_max=3)
    assert (s.exponent_bits, s.weight_bits, s.weight_word_bits, s.weight_word_bytes) == (3, 5, 15, 2)
    assert ArrayConfig(pe="shift", rows=1, cols=5).weight_word_bytes == 4   # 25 bits: 4 bytes
    assert s.acc_bits == acc_width("shift", 1024, x_bits=8, p_min=-4, p_max=3)
    m = ArrayConfig(pe="mul", rows=1, cols=1, requant_mode="mul")
    assert (m.param_channel_bits, m.param_word_bits, m.param_word_bytes) == (54, 54, 8)
    two = ArrayConfig(pe="mul", rows=1, cols=4, requant_mode="mul", requant_lanes=2)
    assert (two.param_channel_bits, two.param_word_bits, two.param_word_bytes) == (54, 108, 16)
    assert sum(b for _, b in requant_lane_fields("pow2x2", 32)) == 48


def test_hash_is_stable_and_sensitive():
    a = ArrayConfig(pe="adder", rows=4, cols=4)
    assert a.build_hash == ArrayConfig.from_dict(a.to_dict()).build_hash
    assert a.build_hash != ArrayConfig(pe="adder", rows=4, cols=4, act_depth=1024).build_hash
    # Pinned: changing the canonical form would orphan every compiled program.
    assert a.to_dict() == {"pe": "adder", "rows": 4, "cols": 4, "x_bits": 8, "w_bits": 8,
                           "p_min": -4, "p_max": 3, "max_k": 1024, "weight_depth": 4096,
                           "act_depth": 512, "param_depth": 256, "requant_mode": "shift",
                           "bias_bits": 32, "counter_bits": 32, "requant_lanes": None,
                           "requant_pipeline": "deep", "writeback_pipeline": "deep",
                           "read_pipeline": "deep", "global_pool": True}
    # A parameter added later appears only when set, so the hash above stays.
    banked = ArrayConfig(pe="adder", rows=4, cols=4, act_banks=2)
    assert banked.to_dict() == {**a.to_dict(), "act_banks": 2}
    assert ArrayConfig.from_dict(banked.to_dict()) == banked
    assert banked.build_hash != a.build_hash
    narrow = ArrayConfig(pe="adder", rows=4, cols=4, requant_lanes=1, act_entry_lanes=2)
    assert narrow.to_dict() == {**a.to_dict(), "requant_lanes": 1, "act_entry_lanes": 2}
    assert ArrayConfig.from_dict(narrow.to_dict()) == narrow
    relayed = ArrayConfig(pe="adder", rows=4, cols=4, weight_relays=2)
    assert relayed.to_dict() == {**a.to_dict(), "weight_relays": 2}
    assert ArrayConfig.from_dict(relayed.to_dict()) == relayed


def test_weight_read_latency():
    latency = {(pipeline, relays): ArrayConfig(pe="adder", rows=2, cols=4, read_pipeline=pipeline,
                                               weight_relays=relays).weight_read_latency
               for pipeline, relays in (("short", None), ("deep", None), ("deep", 1), ("deep", 4))}
    assert latency == {("short", None): 1, ("deep", None): 3, ("deep", 1): 4, ("deep", 4): 4}


@pytest.mark.parametrize("cols, lanes, entry, entries", [(4, 1, 1, 4), (4, 2, 2, 2), (4, 4, 4, 1),
                                                        (6, 2, 2, 4), (6, 3, 4, 2), (3, 1, 2, 2)])
def test_narrow_banks_take_a_bank_per_row_and_a_whole_word_copy(cols, lanes, entry, entries):
    config = ArrayConfig(pe="adder", rows=3, cols=cols, requant_lanes=lanes, act_depth=64,
                         act_entry_lanes=entry)
    assert (config.act_entries, config.act_entry_bits) == (entries, 8 * entry)
    plain = ArrayConfig(pe="adder", rows=3, cols=cols, requant_lanes=lanes, act_depth=64)
    assert (plain.act_entries, plain.act_entry_bits) == (1, 8 * cols)
    # Per buffer: 3 row banks of 64 words of `entries` entries, and one whole-word copy.
    row_banks = 3 * 64 * entries * 8 * entry
    assert config.memory_bits - plain.memory_bits == 2 * (row_banks + 64 * 8 * cols
                                                          - 3 * 64 * 8 * cols)


def test_short_pipelines_keep_both_activation_buffers_in_one_memory():
    # (The iCE40 builds': a bank per row and one for the write-back and the host, each with
    # both buffers, buffer 1 from word 2 ** act_addr_bits on; hw.accelerator.)
    short = dict(read_pipeline="short", writeback_pipeline="short", requant_lanes=1)
    config = ArrayConfig(pe="adder", rows=5, cols=4, act_depth=100, **short)
    assert config.act_pingpong
    deep = ArrayConfig(pe="adder", rows=5, cols=4, act_depth=100, requant_lanes=1)
    assert config.memory_bits - deep.memory_bits == 6 * (128 + 100) * 32 - 2 * 5 * 100 * 32
    for kw in ({"read_pipeline": "deep"}, {"writeback_pipeline": "deep"}, {"act_banks": 1},
               {"act_entry_lanes": 1}, {"act_depth": 129}):
        assert not ArrayConfig(pe="adder", rows=5, cols=4, **{**short, **kw}).act_pingpong


@pytest.mark.parametrize("kw, error, message", [
    ({"pe": "fft"}, ValueError, "pe must be one of 'adder', 'shift', 'mul', not 'fft'"),
    ({"rows": 0}, ValueError, "rows must be an integer in [1, 64], not 0"),
    ({"cols": 2.0}, TypeError, "cols must be an integer, not 2.0"),
    ({"x_bits": 1}, ValueError, "x_bits must be an integer in [2, 16], not 1"),
    ({"w_bits": 6}, ValueError, "w_bits must equal x_bits (8) for adder PEs (weights share the "
                                "activations' format), not 6"),
    ({"p_max": -5}, ValueError, "p_max must be an integer in [-4, 26], not -5"),
    ({"max_k": True}, TypeError, "max_k must be an integer, not True"),
    ({"weight_depth": 8}, ValueError, "weight_depth must be an integer in [16, 1048576], not 8"),
    ({"requant_mode": "float"}, ValueError, "requant_mode must be one of 'shift', 'pow2x2', "
                                            "'mul', not 'float'"),
    ({"bias_bits": 40}, ValueError, "bias_bits must be an integer in [2, 32], not 40"),
    ({"requant_lanes": 3}, ValueError, "requant_lanes must divide cols (4), not 3"),
    ({"requant_pipeline": "fast"}, ValueError, "requant_pipeline must be 'deep' or 'short', not 'fast'"),
    ({"writeback_pipeline": 2}, ValueError, "writeback_pipeline must be 'deep' or 'short', not 2"),
    ({"read_pipeline": "fast"}, ValueError,
     "read_pipeline must be 'deep' or 'short', not 'fast'"),
    ({"act_banks": 3}, ValueError, "act_banks must divide rows (4), not 3"),
    ({"act_banks": 8}, ValueError, "act_banks must be an integer in [1, 4], not 8"),
    ({"requant_lanes": 0}, ValueError, "requant_lanes must be an integer in [1, 4], not 0"),
    ({"act_entry_lanes": 8}, ValueError, "act_entry_lanes must be an integer in [1, 4], not 8"),
    ({"act_entry_lanes": 2}, ValueError,
     "act_entry_lanes must be at least the requantiser's lanes (4), not 2"),
    ({"act_entry_lanes": 3, "requant_lanes": 1}, ValueError,
     "act_entry_lanes must be a power of two, not 3"),
    ({"act_entry_lanes": 4, "act_banks": 2}, ValueError,
     "act_entry_lanes needs a bank per row (act_banks 4 or unset), not act_banks 2"),
    ({"act_entry_lanes": 1, "requant_lanes": 1, "x_bits": 4, "w_bits": 4}, ValueError,
     "act_entry_lanes must be at least 2 with 4-bit activations and 4 columns, not 1: a word's "
     "copy into the row banks takes a cycle per entry (4), and the host may write the next word "
     "after 2 (a byte per cycle)"),
    ({"act_entry_lanes": 1, "requant_lanes": 1, "x_bits": 2, "w_bits": 2}, ValueError,
     "act_entry_lanes must be at least 4 with 2-bit activations and 4 columns, not 1: a word's "
     "copy into the row banks takes a cycle per entry (4), and the host may write the next word "
     "after 1 (a byte per cycle)"),
    ({"act_entry_lanes": 1, "requant_lanes": 1, "x_bits": 2, "w_bits": 2, "cols": 3}, ValueError,
     "act_entry_lanes cannot be used with 2-bit activations and 3 columns (even 2 lanes take 2 "
     "entries): a word's copy into the row banks takes a cycle per entry (3), and the host may "
     "write the next word after 1 (a byte per cycle); leave it unset"),
    ({"weight_relays": 0}, ValueError, "weight_relays must be an integer in [1, 4], not 0"),
    ({"weight_relays": 3}, ValueError, "weight_relays must divide cols (4), not 3"),
    ({"weight_relays": 2, "read_pipeline": "short"}, ValueError,
     "weight_relays needs the deep read pipeline (its registered weight memory), not "
     "read_pipeline 'short'"),
    ({"global_pool": 1}, TypeError, "global_pool must be a bool, not 1"),
])
def test_validation_messages(kw, error, message):
    with pytest.raises(error) as e:
        ArrayConfig(**{"pe": "adder", "rows": 4, "cols": 4, **kw})
    assert str(e.value) == message
    with pytest.raises(TypeError):
        ArrayConfig("adder", 4, 4)       # keyword-only
    with pytest.raises(ValueError, match="Unknown build parameters: colour"):
        ArrayConfig.from_dict({"pe": "adder", "rows": 1, "cols": 1, "colour": "red"})


@pytest.mark.parametrize("x_bits, cols, least", [
    (8, 8, 1), (16, 4, 1), (6, 8, 2), (6, 4, 2), (5, 8, 2), (4, 2, 2), (4, 3, 2), (4, 8, 2),
    (3, 8, 4), (2, 8, 4), (2, 16, 4)])
def test_narrow_banks_have_at_most_a_host_word_of_bytes_in_entries(x_bits, cols, least):
    """A word's copy into the row banks (an entry a cycle) must end before the host can write
    the next word (a byte a cycle, the word's used bytes, its padding skipped): the least entry
    width is accepted, the one below it refused. (Byte-wide or wider activations allow one
    lane.)"""
    kw = dict(pe="adder", rows=2, cols=cols, x_bits=x_bits, w_bits=x_bits, requant_lanes=1)
    ArrayConfig(act_entry_lanes=least, **kw)
    assert -(-cols // least) <= -(-cols * x_bits // 8)
    if least > 1:
        with pytest.raises(ValueError, match=f"act_entry_lanes must be at least {least} "):
            ArrayConfig(act_entry_lanes=least // 2, **kw)
