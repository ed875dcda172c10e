"""The host link's wire protocol: the one source of truth for both the hardware and the host driver.

The hardware generator (``hw/framer.py``) and the host driver (``sw/driver.py``) both read the
command codes, status codes, frame layout, CRC definitions and the identify block from here, so the
two sides cannot drift apart. This module must not import Amaranth: the driver runs without it.
``docs/protocol.md`` is the prose form of this module.

Frames (every multi-byte field little-endian)::

    request:  A5 5A | cmd | seq | len (2) | payload (len)               | crc16 (2)
    response: A5 C3 | cmd | seq | status | request crc16 (2) | len (2) | payload (len) | crc16 (2)

``crc16`` is CRC-16/IBM-3740 (also called CRC-16/CCITT-FALSE: polynomial 0x1021, initial value
0xFFFF, no reflection, ``binascii.crc_hqx(data, 0xFFFF)``) over every byte after the two sync bytes
up to the end of the payload. A response repeats the CRC field of the request it answers, so a
response can never be mistaken for the answer to another request (a stale or duplicated one).
Requests and responses start with different sync words, so an echoing line is never mistaken for
the device.

The CRC read-back of a memory region uses CRC-32/ISO-HDLC (``zlib.crc32``): regions can be hundreds
of KiB, where the 1-in-65536 blind spot of a 16-bit check is too large for a check whose whole job is
catching the rare fault.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import json
import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "PROTOCOL_VERSION", "REQUEST_SYNC", "RESPONSE_SYNC", "MAX_PAYLOAD_LIMIT",
    "REQUEST_OVERHEAD", "RESPONSE_OVERHEAD", "WRITE_HEADER", "OFFSET_BITS", "REGION_BITS",
    "Command", "Status", "RETRYABLE", "COUNTERS", "STATUS_PAYLOAD", "IDENTIFY_MAGIC",
    "crc16", "crc32", "address", "split_address",
    "Request", "Response", "encode_request", "encode_response", "FrameDecoder",
    "write_payload", "read_payload", "crc_payload", "run_payload", "parse_address_args",
    "DeviceStatus", "encode_status", "decode_status",
    "Access", "Region", "Identity", "canonical_build", "build_hash", "ProtocolError",
]

#: Version 2: regions carry the LIVE flag, and a READ or CRC of a region without it while the
#: device runs is refused with BUSY (version 1 answered it with whatever the memory gave).
PROTOCOL_VERSION = 2
#: The line rate the host driver opens a serial port at, and the one board builds use unless
#: told otherwise (8N1).
DEFAULT_BAUD = 115200
REQUEST_SYNC = b"\xA5\x5A"
RESPONSE_SYNC = b"\xA5\xC3"
#: The largest payload any frame may carry in either direction (the device's own limit, reported
#: by identify, may be lower for requests). Decoders drop a header claiming more at once, so a
#: corrupted length field costs at most this many bytes of waiting.
MAX_PAYLOAD_LIMIT = 4096
#: Bytes of a request frame that are not payload: sync (2), cmd, seq, len (2), crc (2).
REQUEST_OVERHEAD = 8
#: Bytes of a response frame that are not payload: sync (2), cmd, seq, status, request crc (2),
#: len (2), crc (2).
RESPONSE_OVERHEAD = 11
#: Bytes in front of the data in a WRITE payload (the address).
WRITE_HEADER = 4
#: An address is ``region << OFFSET_BITS | offset``: 256 regions of up to 16 MiB.
OFFSET_BITS = 24
REGION_BITS = 8
IDENTIFY_MAGIC = b"ADSH"


class ProtocolError(ValueError):
    """Bytes that do not follow the protocol (a malformed payload or identify block)."""


class Command(enum.IntEnum):
    """Request command codes. Payload and response layouts are in ``docs/protocol.md``."""
    IDENTIFY = 0x01  #: () -> identify block (see :class:`Identity`)
    ECHO = 0x02      #: (any bytes) -> the same bytes
    WRITE = 0x10     #: (addr u32, data) -> ()
    READ = 0x11      #: (addr u32, length u16) -> data
    CRC = 0x12       #: (addr u32, length u32) -> crc32 u32
    RUN = 0x20       #: (argument u32) -> ()
    STATUS = 0x21    #: () -> status block (see :class:`DeviceStatus`)


class Status(enum.IntEnum):
    """The status byte of a response: 0 acknowledges (ACK), anything else refuses (NAK)."""
    OK = 0x00
    BAD_CRC = 0x01       #: the frame's CRC did not match; nothing was executed
    BAD_LENGTH = 0x02    #: the length field exceeds the device's max_payload (checked at once)
    TIMEOUT = 0x03       #: the line went idle in the middle of a frame; the parser was reset
    LINE_ERROR = 0x04    #: bad CRC or timeout, and bytes were lost on the line (overrun, framing)
    BAD_COMMAND = 0x10   #: unknown command code (the CRC was good)
    BAD_ARGUMENT = 0x11  #: the payload length or a length argument is wrong for the command
    BAD_ADDRESS = 0x12   #: unknown region, out of its bounds, or an access it does not allow
    BUSY = 0x13          #: running: WRITE, RUN and reads of regions without LIVE must wait


#: NAKs that a corrupted frame can cause: the driver resends the frame. The others come after a
#: good CRC, so they describe the request itself and resending cannot help.
RETRYABLE = frozenset({Status.BAD_CRC, Status.BAD_LENGTH, Status.TIMEOUT, Status.LINE_ERROR})

#: The device's performance counters, in the order the status block carries them.
COUNTERS = ("total_cycles", "busy_pe_cycles", "stall_cycles")
#: Status payload: flags u8, error u8, uptime u64, then one u64 per counter.
STATUS_PAYLOAD = 2 + 8 + 8 * len(COUNTERS)


def crc16(data, init=0xFFFF):
    """CRC-16/IBM-3740 (CCITT-FALSE) of ``data``; pass a previous result as ``init`` to continue."""
    return binascii.crc_hqx(bytes(data), init)


def crc32(data, init=0):
    """CRC-32/ISO-HDLC of ``data`` (``zlib.crc32``), the region read-back check."""
    return zlib.crc32(bytes(data), init) & 0xFFFFFFFF


def _check_int(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], not {value!r}")


def address(region, offset):
    """The 32-bit bus address of byte ``offset`` in region number ``region``."""
    _check_int("Region", region, 0, (1 << REGION_BITS) - 1)
    _check_int("Offset", offset, 0, (1 << OFFSET_BITS) - 1)
    return region << OFFSET_BITS | offset


def split_address(addr):
    """``(region, offset)`` of a 32-bit bus address."""
    _check_int("Address", addr, 0, 0xFFFFFFFF)
    return addr >> OFFSET_BITS, addr & ((1 << OFFSET_BITS) - 1)


# --- frames ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    cmd: int
    seq: int
    payload: bytes = b""

    def encode(self):
        return encode_request(self.cmd, self.seq, self.payload)

    @property
    def crc(self):
        """The CRC field this request carries (responses repeat it)."""
        return crc16(struct.pack("<BBH", self.cmd, self.seq, len(self.payload)) + self.payload)


@dataclass(frozen=True)
class Response:
    cmd: int
    seq: int
    status: int
    request_crc: int
    payload: bytes = b""

    def encode(self):
        return encode_response(self.cmd, self.seq, self.status, self.request_crc, self.payload)

    @property
    def ok(self):
        return self.status == Status.OK

    def answers(self, request):
        """Whether this response belongs to ``request`` (command, sequence number and CRC match)."""
        return (self.cmd == request.cmd and self.seq == request.seq
                and self.request_crc == request.crc)


def _check_payload(payload):
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"Payload must be bytes, not {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_LIMIT:
        raise ValueError(f"Payload length must be at most {MAX_PAYLOAD_LIMIT}, not {len(payload)}")
    return bytes(payload)


def encode_request(cmd, seq, payload=b""):
    """The bytes of a request frame."""
    _check_int("Command", cmd, 0, 255)
    _check_int("Sequence number", seq, 0, 255)
    payload = _check_payload(payload)
    body = struct.pack("<BBH", cmd, seq, len(payload)) + payload
    return REQUEST_SYNC + body + struct.pack("<H", crc16(body))


def encode_response(cmd, seq, status, request_crc, payload=b""):
    """The bytes of a response frame."""
    _check_int("Command", cmd, 0, 255)
    _check_int("Sequence number", seq, 0, 255)
    _check_int("Status", status, 0, 255)
    _check_int("Request CRC", request_crc, 0, 0xFFFF)
    payload = _check_payload(payload)
    body = struct.pack("<BBBHH", cmd, seq, status, request_crc, len(payload)) + payload
    return RESPONSE_SYNC + body + struct.pack("<H", crc16(body))


class FrameDecoder:
    """Finds frames of one direction in a byte stream that may hold garbage, losses and corruption.

    ``feed(data)`` returns the complete frames found so far, in order. A candidate frame whose
    length field exceeds ``max_payload`` or whose CRC fails is dropped by skipping its first sync
    byte and scanning on, so a false sync word inside garbage never hides a real frame behind it.

    Parameters
    ----------
    kind : ``"request"`` or ``"response"``
    max_payload : int
        The longest payload accepted (at most :data:`MAX_PAYLOAD_LIMIT`).
    """

    def __init__(self, *, kind, max_payload=MAX_PAYLOAD_LIMIT):
        if kind not in ("request", "response"):
            raise ValueError(f"Frame kind must be 'request' or 'response', not {kind!r}")
        _check_int("Maximum payload", max_payload, 0, MAX_PAYLOAD_LIMIT)
        self._kind = kind
        self._sync = REQUEST_SYNC if kind == "request" else RESPONSE_SYNC
        self._header = 6 if kind == "request" else 9
        self._max_payload = max_payload
        self._buf = bytearray()
        #: Bytes thrown away (garbage, bad frames) since creation.
        self.discarded = 0
        #: Candidate frames dropped for a bad CRC or length since creation.
        self.bad_frames = 0

    @property
    def kind(self):
        return self._kind

    @property
    def pending(self):
        """Bytes held that do not form a complete frame yet."""
        return len(self._buf)

    def _skip(self, n):
        del self._buf[:n]
        self.discarded += n

    def feed(self, data=b""):
        self._buf += data
        frames = []
        while True:
            i = self._buf.find(self._sync)
            if i < 0:
                # Keep a trailing first sync byte: the second one may arrive in the next feed.
                keep = 1 if self._buf[-1:] == self._sync[:1] else 0
                self._skip(len(self._buf) - keep)
                return frames
            self._skip(i)
            if len(self._buf) < self._header:
                return frames
            length = int.from_bytes(self._buf[self._header - 2:self._header], "little")
            if length > self._max_payload:
                self.bad_frames += 1
                self._skip(1)
                continue
            end = self._header + length + 2
            if len(self._buf) < end:
                return frames
            body = bytes(self._buf[2:end - 2])
            if crc16(body) != int.from_bytes(self._buf[end - 2:end], "little"):
                self.bad_frames += 1
                self._skip(1)
                continue
            del self._buf[:end]
            if self._kind == "request":
                cmd, seq = body[0], body[1]
                frames.append(Request(cmd, seq, body[4:]))
            else:
                cmd, seq, status, request_crc = struct.unpack_from("<BBBH", body)
                frames.append(Response(cmd, seq, status, request_crc, body[7:]))

    def drop_partial(self):
        """Give up on an incomplete candidate frame (after a timeout) and return what follows it.

        A corrupted length field can make a false candidate wait for bytes that never come; this
        skips its sync byte and scans the rest of the buffer again.
        """
        if self._buf[:2] == self._sync:
            self.bad_frames += 1
            self._skip(1)
        return self.feed()


# --- payloads ----------------------------------------------------------------------------------

def write_payload(addr, data):
    """WRITE payload: the address and the bytes to write there."""
    _check_int("Address", addr, 0, 0xFFFFFFFF)
    return struct.pack("<I", addr) + bytes(data)


def read_payload(addr, length):
    """READ payload: the address and the number of bytes to read."""
    _check_int("Address", addr, 0, 0xFFFFFFFF)
    _check_int("Read length", length, 0, 0xFFFF)
    return struct.pack("<IH", addr, length)


def crc_payload(addr, length):
    """CRC payload: the address and the number of bytes to check."""
    _check_int("Address", addr, 0, 0xFFFFFFFF)
    _check_int("CRC length", length, 0, 0xFFFFFFFF)
    return struct.pack("<II", addr, length)


def run_payload(argument=0):
    """RUN payload: a 32-bit argument handed to the device with the run strobe."""
    _check_int("Run argument", argument, 0, 0xFFFFFFFF)
    return struct.pack("<I", argument)


def parse_address_args(payload):
    """``(addr, length)`` of a READ or CRC payload (for models of the device and for tests)."""
    if len(payload) == 6:
        return struct.unpack("<IH", payload)
    if len(payload) == 8:
        return struct.unpack("<II", payload)
    raise ProtocolError(f"an address payload has 6 or 8 bytes, not {len(payload)}")


@dataclass(frozen=True)
class DeviceStatus:
    """What STATUS reports: run state, the device's error code, its uptime and counters.

    Counters are as wide as the device's ``counter_width`` (identify) and wrap around.
    """
    busy: bool
    done: bool
    error: int
    uptime: int
    total_cycles: int
    busy_pe_cycles: int
    stall_cycles: int

    @property
    def counters(self):
        return {name: getattr(self, name) for name in COUNTERS}


def encode_status(*, busy, done, error, uptime, counters):
    """The STATUS payload (``counters`` in :data:`COUNTERS` order)."""
    if len(counters) != len(COUNTERS):
        raise ValueError(f"Counters must have {len(COUNTERS)} values, not {len(counters)}")
    flags = int(bool(busy)) | int(bool(done)) << 1 | int(error != 0) << 2
    return struct.pack("<BBQ" + "Q" * len(COUNTERS), flags, error, uptime, *counters)


def decode_status(payload):
    if len(payload) != STATUS_PAYLOAD:
        raise ProtocolError(f"a status block has {STATUS_PAYLOAD} bytes, not {len(payload)}")
    flags, error, uptime, *counters = struct.unpack("<BBQ" + "Q" * len(COUNTERS), payload)
    return DeviceStatus(busy=bool(flags & 1), done=bool(flags & 2), error=error, uptime=uptime,
                        **dict(zip(COUNTERS, counters)))


# --- identify ----------------------------------------------------------------------------------

class Access(enum.IntFlag):
    """What the host may do with a region. ``LIVE`` (with ``READ``): READ and CRC are answered
    while the device runs too; without it they are refused with BUSY then, because the region's
    memory belongs to the run."""
    READ = 1
    WRITE = 2
    RW = 3
    LIVE = 4


@dataclass(frozen=True)
class Region:
    """A memory region of the device: number (the top address byte), name, size in bytes, access."""
    id: int
    name: str
    size: int
    access: Access = Access.RW

    def __post_init__(self):
        _check_int("Region id", self.id, 0, (1 << REGION_BITS) - 1)
        if not (isinstance(self.name, str) and self.name.isascii() and 0 < len(self.name) < 64
                and self.name.isprintable()):
            raise ValueError(f"Region name must be 1 to 63 printable ASCII characters, not "
                             f"{self.name!r}")
        _check_int("Region size", self.size, 1, 1 << OFFSET_BITS)
        valid = {Access.READ, Access.WRITE, Access.RW, Access.READ | Access.LIVE,
                 Access.RW | Access.LIVE}
        if isinstance(self.access, bool) or self.access not in valid:
            raise ValueError(f"Region access must be Access.READ, WRITE or RW, optionally with "
                             f"LIVE when readable, not {self.access!r}")
        object.__setattr__(self, "access", Access(self.access))

    @property
    def base(self):
        return self.id << OFFSET_BITS


def canonical_build(build):
    """The build parameters as canonical JSON bytes (sorted keys, no spaces): what is hashed."""
    if not isinstance(build, dict):
        raise TypeError(f"Build parameters must be a dict, not {type(build).__name__}")
    return json.dumps(build, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def build_hash(build):
    """SHA-256 (hex) of the canonical build parameters: the compiler stamps it into a program and
    the device reports it, so a program for another build is refused."""
    return hashlib.sha256(canonical_build(build)).hexdigest()


@dataclass(frozen=True)
class Identity:
    """The identify block: what the device is and how to talk to it.

    Layout: magic ``ADSH``, protocol version u8, counter width u8, max_payload u16, clock Hz u32,
    baud u32, region count u8, then per region (id u8, access u8, size u32, name length u8, name),
    then build JSON length u16, the canonical build JSON, and its SHA-256 (32 bytes).
    """
    max_payload: int
    clk_hz: int
    baud: int
    regions: tuple
    build: dict
    counter_width: int = 32
    version: int = PROTOCOL_VERSION

    def __post_init__(self):
        _check_int("Maximum payload", self.max_payload, 16, MAX_PAYLOAD_LIMIT)
        _check_int("Clock frequency", self.clk_hz, 1, 0xFFFFFFFF)
        _check_int("Baud rate", self.baud, 1, 0xFFFFFFFF)
        _check_int("Counter width", self.counter_width, 1, 64)
        regions = tuple(self.regions)
        if not all(isinstance(r, Region) for r in regions):
            raise TypeError(f"Regions must be Region objects, not {regions!r}")
        ids = [r.id for r in regions]
        names = [r.name for r in regions]
        if len(set(ids)) != len(ids) or len(set(names)) != len(names):
            raise ValueError(f"Region ids and names must be unique, not {regions!r}")
        object.__setattr__(self, "regions", regions)
        canonical_build(self.build)

    @property
    def build_hash(self):
        return build_hash(self.build)

    def region(self, key):
        """The region with this name or number."""
        for r in self.regions:
            if key == r.name or (isinstance(key, int) and key == r.id):
                return r
        known = ", ".join(f"{r.name} ({r.id})" for r in self.regions)
        raise KeyError(f"the device has no region {key!r}; it has {known}")

    def encode(self):
        out = bytearray(IDENTIFY_MAGIC)
        out += struct.pack("<BBHIIB", self.version, self.counter_width, self.max_payload,
                           self.clk_hz, self.baud, len(self.regions))
        for r in self.regions:
            name = r.name.encode()
            out += struct.pack("<BBIB", r.id, int(r.access), r.size, len(name)) + name
        build = canonical_build(self.build)
        out += struct.pack("<H", len(build)) + build
        out += hashlib.sha256(build).digest()
        return bytes(out)

    @classmethod
    def decode(cls, data):
        data = bytes(data)
        try:
            if data[:4] != IDENTIFY_MAGIC:
                raise ProtocolError(f"identify block starts with {data[:4]!r}, not "
                                    f"{IDENTIFY_MAGIC!r}")
            version, counter_width, max_payload, clk_hz, baud, n = struct.unpack_from(
                "<BBHIIB", data, 4)
            if version != PROTOCOL_VERSION:
                raise ProtocolError(f"the device speaks protocol version {version}, this driver "
                                    f"version {PROTOCOL_VERSION}")
            pos = 17
            regions = []
            for _ in range(n):
                rid, access, size, name_len = struct.unpack_from("<BBIB", data, pos)
                pos += 7
                name = data[pos:pos + name_len].decode("ascii")
                pos += name_len
                regions.append(Region(rid, name, size, Access(access)))
            (build_len,) = struct.unpack_from("<H", data, pos)
            pos += 2
            build_bytes = data[pos:pos + build_len]
            pos += build_len
            digest = data[pos:pos + 32]
            if len(build_bytes) != build_len or hashlib.sha256(build_bytes).digest() != digest:
                raise ProtocolError("identify block: the build hash does not match its parameters")
            if pos + 32 != len(data):
                raise ProtocolError(f"identify block has {len(data) - pos - 32} trailing bytes")
            build = json.loads(build_bytes)
            return cls(max_payload=max_payload, clk_hz=clk_hz, baud=baud, regions=tuple(regions),
                       build=build, counter_width=counter_width, version=version)
        except (struct.error, UnicodeDecodeError, json.JSONDecodeError, ValueError,
                TypeError) as e:
            if isinstance(e, ProtocolError):
                raise
            raise ProtocolError(f"malformed identify block: {e}") from None
