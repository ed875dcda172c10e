"""The wire format: frame encoder and decoder (hypothesis), payload helpers, the identify block."""

import hashlib
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addershift.sw import protocol as P

payloads = st.binary(max_size=300)
cmds = st.integers(0, 255)
seqs = st.integers(0, 255)


def test_crc_definitions():
    # CRC-16/IBM-3740 (CCITT-FALSE) and CRC-32/ISO-HDLC check values from the reveng catalogue
    assert P.crc16(b"123456789") == 0x29B1
    assert P.crc32(b"123456789") == 0xCBF43926 == zlib.crc32(b"123456789")
    assert P.crc16(b"6789", P.crc16(b"12345")) == 0x29B1


def test_frame_layout_by_hand():
    frame = P.encode_request(P.Command.WRITE, 7, b"\x01\x02")
    body = bytes([0x10, 7, 2, 0, 1, 2])
    assert frame == b"\xA5\x5A" + body + P.crc16(body).to_bytes(2, "little")
    resp = P.encode_response(0x10, 7, 0, 0xBEEF, b"")
    body = bytes([0x10, 7, 0, 0xEF, 0xBE, 0, 0])
    assert resp == b"\xA5\xC3" + body + P.crc16(body).to_bytes(2, "little")
    assert len(frame) == P.REQUEST_OVERHEAD + 2 and len(resp) == P.RESPONSE_OVERHEAD


@given(cmds, seqs, payloads)
def test_request_round_trip(cmd, seq, payload):
    r = P.Request(cmd, seq, payload)
    assert P.FrameDecoder(kind="request").feed(r.encode()) == [r]


@given(cmds, seqs, st.integers(0, 255), st.integers(0, 0xFFFF), payloads)
def test_response_round_trip(cmd, seq, status, rcrc, payload):
    r = P.Response(cmd, seq, status, rcrc, payload)
    assert P.FrameDecoder(kind="response").feed(r.encode()) == [r]


@given(st.lists(st.tuples(st.binary(max_size=40), cmds, seqs, payloads), max_size=6),
       st.binary(max_size=40), st.data())
def test_frames_found_among_garbage_in_any_chunking(items, tail, data):
    """Garbage (even holding sync words) between frames never hides a frame or invents one."""
    stream, frames = b"", []
    for garbage, cmd, seq, payload in items:
        # garbage must not end in a partial frame that swallows the next one
        garbage = garbage.replace(P.REQUEST_SYNC[:1], b"")
        r = P.Request(cmd, seq, payload)
        stream += garbage + r.encode()
        frames.append(r)
    stream += tail.replace(P.REQUEST_SYNC[:1], b"")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    dec, got = P.FrameDecoder(kind="request"), []
    for a, b in zip([0] + cuts, cuts + [len(stream)]):
        got += dec.feed(stream[a:b])
    assert got == frames


@given(cmds, seqs, st.binary(min_size=1, max_size=200), st.data())
@settings(max_examples=300)
def test_corruption_is_never_a_different_frame(cmd, seq, payload, data):
    """Flip up to 3 bits (CRC-16 has Hamming distance 4 here), drop, duplicate or truncate: the
    decoder returns the original frame or nothing, never something else."""
    frame = bytearray(P.Request(cmd, seq, payload).encode())
    kind = data.draw(st.sampled_from(["flip", "drop", "dup", "truncate"]))
    if kind == "flip":
        for bit in data.draw(st.sets(st.integers(0, 8 * len(frame) - 1), min_size=1, max_size=3)):
            frame[bit // 8] ^= 1 << (bit % 8)
    elif kind == "drop":
        del frame[data.draw(st.integers(0, len(frame) - 1))]
    elif kind == "dup":
        i = data.draw(st.integers(0, len(frame) - 1))
        frame.insert(i, frame[i])
    else:
        frame = frame[:data.draw(st.integers(0, len(frame) - 1))]
    got = P.FrameDecoder(kind="request").feed(bytes(frame))
    original = P.Request(cmd, seq, payload)
    assert all(g == original for g in got)
    if kind in ("flip", "drop", "truncate"):
        # a duplicated byte can be a no-op (e.g. a repeated sync byte); every other fault is seen
        assert got == [] or bytes(frame) == original.encode()


@given(st.binary(max_size=2000))
def test_decoder_survives_any_bytes(blob):
    dec = P.FrameDecoder(kind="response", max_payload=64)
    for f in dec.feed(blob) + dec.drop_partial():
        assert len(f.payload) <= 64
    assert dec.pending <= 9 + 64 + 2


def test_decoder_drops_oversized_length_at_once():
    dec = P.FrameDecoder(kind="response", max_payload=16)
    good = P.Response(1, 2, 0, 3, b"ok")
    fake = P.RESPONSE_SYNC + bytes([1, 2, 0, 0, 0]) + (17).to_bytes(2, "little")
    assert dec.feed(fake + good.encode()) == [good]
    assert dec.bad_frames == 1


def test_drop_partial_recovers_a_frame_behind_a_false_start():
    good = P.Response(1, 2, 0, 3, b"ok")
    fake = P.RESPONSE_SYNC + bytes([1, 2, 0, 0, 0]) + (200).to_bytes(2, "little")
    dec = P.FrameDecoder(kind="response")
    assert dec.feed(fake + good.encode()) == []     # waiting for 200 payload bytes
    assert dec.drop_partial() == [good]


def test_answers_matches_command_sequence_and_crc():
    q = P.Request(P.Command.READ, 9, P.read_payload(P.address(1, 0), 4))
    ok = P.Response(q.cmd, q.seq, 0, q.crc, b"abcd")
    assert ok.answers(q)
    assert not P.Response(q.cmd, q.seq, 0, q.crc ^ 1, b"abcd").answers(q)
    assert not P.Response(q.cmd, q.seq + 1, 0, q.crc, b"abcd").answers(q)
    assert not P.Response(P.Command.WRITE, q.seq, 0, q.crc, b"").answers(q)


def test_payload_helpers_and_checks():
    assert P.address(2, 0x10) == 0x02000010
    assert P.split_address(0x02000010) == (2, 0x10)
    assert P.parse_address_args(P.read_payload(0x01000004, 7)) == (0x01000004, 7)
    assert P.parse_address_args(P.crc_payload(0x01000004, 70000)) == (0x01000004, 70000)
    assert P.run_payload(5) == b"\x05\x00\x00\x00"
    with pytest.raises(ValueError, match=r"^Offset must be in \[0, 16777215\], not 16777216$"):
        P.address(1, 1 << 24)
    with pytest.raises(TypeError, match=r"^Sequence number must be an integer, not '1'$"):
        P.encode_request(1, "1")
    with pytest.raises(ValueError, match=r"^Payload length must be at most 4096, not 4097$"):
        P.encode_request(1, 1, bytes(4097))
    with pytest.raises(ValueError, match=r"^Frame kind must be 'request' or 'response', not 'x'$"):
        P.FrameDecoder(kind="x")


def test_status_block_round_trip():
    payload = P.encode_status(busy=True, done=False, error=3, uptime=2**40,
                              counters=[1, 2**33, 3])
    assert len(payload) == P.STATUS_PAYLOAD
    s = P.decode_status(payload)
    assert (s.busy, s.done, s.error, s.uptime) == (True, False, 3, 2**40)
    assert s.counters == {"total_cycles": 1, "busy_pe_cycles": 2**33, "stall_cycles": 3}
    with pytest.raises(P.ProtocolError, match=r"^a status block has 34 bytes, not 3$"):
        P.decode_status(b"abc")


IDENT = P.Identity(max_payload=256, clk_hz=12_000_000, baud=115_200, counter_width=40,
                   regions=(P.Region(1, "weights", 32768, P.Access.WRITE),
                            P.Region(2, "outputs", 64, P.Access.READ),
                            P.Region(3, "counters", 16, P.Access.READ | P.Access.LIVE)),
                   build={"pe": "adder", "rows": 4, "cols": 4})


def test_identify_round_trip_and_hash():
    blob = IDENT.encode()
    assert blob[:4] == b"ADSH"
    assert P.Identity.decode(blob) == IDENT
    assert IDENT.build_hash == hashlib.sha256(b'{"cols":4,"pe":"adder","rows":4}').hexdigest()
    assert P.build_hash({"rows": 4, "cols": 4, "pe": "adder"}) == IDENT.build_hash
    assert IDENT.region("weights").base == 1 << 24
    assert IDENT.region(2).name == "outputs"
    assert P.Identity.decode(blob).region("counters").access == P.Access.READ | P.Access.LIVE
    with pytest.raises(KeyError, match=r"the device has no region 'x'; it has weights \(1\), "
                                       r"outputs \(2\), counters \(3\)"):
        IDENT.region("x")


@given(st.integers(0, 200), st.integers(0, 7))
def test_identify_corruption_is_refused(pos, bit):
    blob = bytearray(IDENT.encode())
    pos %= len(blob)
    blob[pos] ^= 1 << bit
    try:
        got = P.Identity.decode(bytes(blob))
    except P.ProtocolError:
        return
    # a flip that still decodes (e.g. a size or the clock) is a different identity, never the same
    assert got != IDENT


def test_identify_refuses_bad_blocks():
    with pytest.raises(P.ProtocolError, match=r"^identify block starts with b'XDSH'"):
        P.Identity.decode(b"X" + IDENT.encode()[1:])
    with pytest.raises(P.ProtocolError, match=r"build hash does not match"):
        P.Identity.decode(IDENT.encode()[:-1] + b"\x00")
    with pytest.raises(P.ProtocolError, match=r"^malformed identify block"):
        P.Identity.decode(IDENT.encode()[:10])
    with pytest.raises(ValueError, match=r"^Region ids and names must be unique"):
        P.Identity(max_payload=64, clk_hz=1, baud=1, build={},
                   regions=(P.Region(1, "a", 1), P.Region(1, "b", 1)))
    with pytest.raises(ValueError, match=r"^Region size must be in \[1, 16777216\], not 0$"):
        P.Region(1, "a", 0)


@pytest.mark.parametrize("access", [0, 4, 6, 8, True, "r"])
def test_region_access_must_be_read_write_or_both_and_live_only_when_readable(access):
    with pytest.raises(ValueError, match=r"^Region access must be Access.READ, WRITE or RW, "
                                         r"optionally with LIVE when readable, not "):
        P.Region(1, "a", 1, access)


def test_a_block_of_another_protocol_version_is_refused():
    blob = bytearray(IDENT.encode())
    blob[4] = P.PROTOCOL_VERSION - 1
    with pytest.raises(P.ProtocolError, match=rf"^the device speaks protocol version "
                                              rf"{P.PROTOCOL_VERSION - 1}, this driver version "
                                              rf"{P.PROTOCOL_VERSION}$"):
        P.Identity.decode(bytes(blob))
