"""Host driver of the link: talks to a board (or the simulated board) over any pyserial URL.

``Device("/dev/ttyUSB1")`` or ``Device("socket://127.0.0.1:7777")`` connects and identifies the
build. Memory is addressed by region (name or number, from identify) and byte offset:

- :meth:`Device.write` streams data in frames with a window of outstanding acknowledgements, shows
  progress on long transfers, then checks the region's CRC-32 against what was sent;
- :meth:`Device.read`, :meth:`Device.crc`, :meth:`Device.run`, :meth:`Device.status`.

Every answer is matched to its request by command, sequence number and the request's CRC (which the
device repeats), and checked by its own CRC. A NAK caused by corruption on the line, or silence,
makes the driver resend, a bounded number of times; then it raises :class:`LinkError` naming what
was pending. It never returns data that failed a check, and a write that raises says which bytes
may be partly written. The memory and command API is what a ``predict(images)`` is built on; it
must first refuse a program built for another device with :func:`check_build`.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import deque
from urllib.parse import urlsplit

from . import protocol as P

__all__ = ["LinkError", "LinkTimeout", "Refused", "VerifyError", "DeviceError", "BuildMismatch",
           "RunUnconfirmed", "BadAnswer", "Device", "check_build", "open_port"]


class LinkError(Exception):
    """The link failed: the message names the request(s) that were pending."""


class LinkTimeout(LinkError):
    """The board stopped answering (or disconnected)."""


class Refused(LinkError):
    """The device refused a request that arrived intact (its NAK code says why)."""

    def __init__(self, message, *, status):
        super().__init__(message)
        self.status = status


class VerifyError(LinkError):
    """A CRC read-back did not match what was written."""


class DeviceError(LinkError):
    """The device finished a run with an error code."""

    def __init__(self, message, *, code):
        super().__init__(message)
        self.code = code


class BuildMismatch(LinkError):
    """A program compiled for another build than the one on the board."""


class BadAnswer(LinkError):
    """An answer that arrived intact (its CRC good) but does not follow the protocol: a status
    code or a payload this driver does not know (another firmware, another protocol version)."""


class RunUnconfirmed(LinkError):
    """A RUN got no answer and the device is idle: it may have run, or the RUN never arrived.

    A RUN is not sent again after silence: a run computes on the device's own buffers (a later
    stage may overwrite the input), so a second one would take the first one's output as its
    input. Write the inputs again, then run (``host.Accelerator`` does)."""


def _status(code):
    """A NAK's code as ``protocol.Status``, or the bare number when the protocol has no such code
    (a device that is not this driver's may send any byte)."""
    try:
        return P.Status(code)
    except ValueError:
        return code


def _status_name(code):
    status = _status(code)
    return status.name if isinstance(status, P.Status) else f"unknown status 0x{code:02x}"


def check_build(identity, *, build_hash, build=None, what="program"):
    """Refuse ``what`` (compiled for ``build_hash``, parameters ``build``) unless the board's
    identity has the same build hash. The message names both builds."""
    if not isinstance(identity, P.Identity):
        raise TypeError(f"Identity must be a protocol.Identity, not {identity!r}")
    if not isinstance(build_hash, str):
        raise TypeError(f"Build hash must be a hex string, not {build_hash!r}")
    if build is not None and P.build_hash(build) != build_hash:
        raise BuildMismatch(f"the {what}'s build hash {build_hash[:16]} does not match its own "
                            f"build parameters {P.canonical_build(build).decode()}")
    if build_hash != identity.build_hash:
        theirs = P.canonical_build(build).decode() if build is not None else "(parameters unknown)"
        raise BuildMismatch(
            f"the {what} was compiled for build {build_hash[:16]} {theirs}, but the board runs "
            f"build {identity.build_hash[:16]} {P.canonical_build(identity.build).decode()}")


def open_port(url, *, baudrate=P.DEFAULT_BAUD):
    """Open a pyserial URL (a device path or ``socket://host:port``) for the driver; raises
    :class:`LinkError` naming the URL and the reason."""
    import serial
    if url.startswith("socket://"):
        # Checked here: pyserial garbles its message for a bad port ("'debug|info|warning|error'").
        _, sep, port = urlsplit(url).netloc.rpartition(":")
        if not sep or "]" in port:
            raise LinkError(f"cannot open {url}: it names no TCP port (socket://HOST:PORT)")
        if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
            raise LinkError(f"cannot open {url}: the TCP port must be an integer in 0-65535, "
                            f"not {port!r}")
    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=0, write_timeout=10)
    except (serial.SerialException, ValueError) as e:
        # pyserial's message repeats the URL ("could not open port URL: ...")
        reason = re.sub(rf"^could not open port {re.escape(url)}: ", "", str(e), flags=re.I)
        raise LinkError(f"cannot open {url}: {reason}") from None


def _busy_hint(region, status):
    """Why a READ or CRC of ``region`` may be refused with BUSY (empty for other answers)."""
    if status != P.Status.BUSY or region.access & P.Access.LIVE:
        return ""
    return f" (region {region.name} is not readable while the board runs; wait for the run to end)"


class _Progress:
    """Plain-text progress on stderr: percent, bytes and rate, at most five updates a second."""

    def __init__(self, label, total, enabled, stream=None):
        self.label, self.total, self.enabled = label, total, enabled
        self.stream = stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.done = 0

    def update(self, n):
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last >= 0.2 or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            pct = 100 * self.done // max(self.total, 1)
            self.stream.write(f"\r{self.label}: {pct:3d}% {self.done}/{self.total} bytes "
                              f"{rate / 1024:.1f} KiB/s")
            self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class Device:
    """A board (or the simulated board) behind a serial URL.

    Parameters
    ----------
    port : str or serial-like object
        A pyserial URL, or an already open port (anything with ``read``, ``write``, ``close``;
        ``read`` must not block when its timeout is 0).
    baudrate : int
        For real serial ports (ignored by ``socket://``).
    timeout : float
        Seconds without any valid answer, while requests are pending, before resending them.
    retries : int
        Resends allowed per request (after a NAK caused by the line, or a timeout).
    window : int
        WRITE frames in flight before waiting for their acknowledgements.
    progress : bool or None
        Progress lines on stderr for transfers of at least ``progress_min`` bytes; ``None`` shows
        them when stderr is a terminal.
    """

    def __init__(self, port, *, baudrate=P.DEFAULT_BAUD, timeout=2.0, retries=4, window=8, progress=None,
                 progress_min=16384):
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"Timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"Retries must be a non-negative integer, not {retries!r}")
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 64:
            raise ValueError(f"Window must be an integer in [1, 64], not {window!r}")
        self._url = port if isinstance(port, str) else getattr(port, "name", repr(port))
        self._port = open_port(port, baudrate=baudrate) if isinstance(port, str) else port
        self._timeout = float(timeout)
        self._retries = retries
        self._window = window
        self._progress = sys.stderr.isatty() if progress is None else bool(progress)
        self._progress_min = progress_min
        self._decoder = P.FrameDecoder(kind="response")
        try:   # wait for bytes with select where the port has a file descriptor, else poll
            self._fileno = self._port.fileno()
        except (AttributeError, NotImplementedError, OSError, ValueError):
            self._fileno = None
        self._seq = int.from_bytes(os.urandom(1), "little")
        self._identity = None
        #: Counts of what the link went through (resends, NAKs, timeouts, bytes thrown away).
        self.stats = {"frames": 0, "resent": 0, "naks": 0, "lost": 0, "timeouts": 0, "stale": 0}
        try:
            # A previous session may have left the device's parser inside a frame. Most devices
            # take 256-byte payloads; should this be too short, a timeout pads to the limit.
            self._resync(guess=256)
            self._identity = self.identify()
        except BaseException:
            self.close()
            raise

    # --- plumbing ------------------------------------------------------------------------------

    @property
    def identity(self):
        """What the board said it is (:class:`~addershift.sw.protocol.Identity`)."""
        return self._identity

    @property
    def url(self):
        return self._url

    @property
    def retries(self):
        """Resends allowed per request."""
        return self._retries

    def close(self):
        if self._port is not None:
            try:
                self._port.close()
            finally:
                self._port = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _next_seq(self):
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _send(self, data):
        import serial
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as e:
            raise LinkTimeout(f"cannot send to the board at {self._url}: {e}") from None

    def _receive(self, wait):
        """Bytes that arrived, waiting up to ``wait`` seconds for the first one."""
        import select

        import serial
        try:
            if self._fileno is not None:
                select.select([self._fileno], [], [], wait)
                return self._port.read(65536)
            data = self._port.read(65536)
            if not data:
                time.sleep(min(wait, 0.002))
            return data
        except (serial.SerialException, OSError) as e:
            raise LinkTimeout(f"the board at {self._url} disconnected ({e})") from None

    def _resync(self, *, guess=None):
        """Bring the device's parser back to hunting for a sync word, whatever it was doing.

        A run of zero bytes as long as the longest frame completes any frame it was in the middle
        of (which then fails its CRC); in between frames zeros are ignored. Before identify the
        longest frame is unknown: ``guess`` (or the protocol's limit) stands in.
        """
        longest = (self._identity.max_payload if self._identity
                   else guess or P.MAX_PAYLOAD_LIMIT)
        self._send(bytes(longest + P.REQUEST_OVERHEAD))
        self._decoder.drop_partial()

    def _describe(self, job):
        cmd, payload, label = job
        return label

    def _transact(self, jobs, *, window=1, progress=None, once=False):
        """Send ``jobs`` (command, payload, label) with up to ``window`` in flight; return their
        answers (:class:`~addershift.sw.protocol.Response`) in order. Resends after a NAK caused
        by the line, a lost answer or a timeout; raises after ``retries`` resends of one job.

        With ``once`` the jobs must not execute twice: they are resent only after a NAK that says
        nothing executed, and a lost answer raises :class:`RunUnconfirmed`."""
        results = [None] * len(jobs)
        attempts = [0] * len(jobs)
        last_failure = [""] * len(jobs)
        todo = deque(range(len(jobs)))
        pending = {}            # seq -> (job index, request, send order)
        sent = 0
        last_answer = time.monotonic()
        noise = (self._decoder.bad_frames, self._decoder.discarded)   # at the last good answer

        def requeue(entries, why):
            for i, _, _ in sorted(entries, key=lambda e: -e[2]):
                last_failure[i] = why
                todo.appendleft(i)

        while todo or pending:
            while todo and len(pending) < window:
                i = todo.popleft()
                if attempts[i] > self._retries:
                    raise self._give_up(jobs, i, last_failure[i], pending, noise)
                attempts[i] += 1
                cmd, payload, _ = jobs[i]
                req = P.Request(cmd, self._next_seq(), payload)
                pending[req.seq] = (i, req, sent)
                sent += 1
                self.stats["frames"] += 1
                self.stats["resent"] += attempts[i] > 1
                self._send(req.encode())
            for resp in self._decoder.feed(self._receive(0.01 if pending else 0)):
                entry = pending.get(resp.seq)
                if entry is None or resp.cmd != entry[1].cmd:
                    self.stats["stale"] += 1
                    continue
                i, req, order = entry
                if resp.status in P.RETRYABLE:
                    # The line garbled this frame (the NAK may not repeat our CRC: the device only
                    # knows what it received). Nothing was executed; send it again.
                    self.stats["naks"] += 1
                    why = f"NAK {_status_name(resp.status)}"
                elif not resp.answers(req):
                    self.stats["stale"] += 1
                    continue
                else:
                    results[i] = resp      # an ACK, or the refusal of an intact request
                    why = None
                del pending[resp.seq]
                last_answer = time.monotonic()
                noise = (self._decoder.bad_frames, self._decoder.discarded)
                # The device answers in order: every frame sent before this one that is still
                # pending was lost (or its answer was). Resend those now, not after a timeout.
                earlier = [e for e in pending.values() if e[2] < order]
                if once and earlier:
                    raise self._unconfirmed(jobs, earlier[0][0], "a later request's answer came "
                                                                 "first")
                for e in earlier:
                    del pending[e[1].seq]
                self.stats["lost"] += len(earlier)
                requeue(earlier, "its answer was lost")
                if why is not None:
                    requeue([entry], why)
                elif progress is not None:
                    progress(i)
            if pending and time.monotonic() - last_answer > self._timeout:
                self.stats["timeouts"] += 1
                stuck = list(pending.values())
                pending.clear()
                if once:
                    self._resync()
                    raise self._unconfirmed(jobs, min(stuck, key=lambda e: e[2])[0],
                                            f"no answer for {self._timeout:g} s")
                requeue(stuck, f"no answer for {self._timeout:g} s")
                if any(attempts[i] > self._retries for i, _, _ in stuck):
                    i = min((e for e in stuck if attempts[e[0]] > self._retries),
                            key=lambda e: e[2])[0]
                    raise self._give_up(jobs, i, last_failure[i], {e[1].seq: e for e in stuck},
                                        noise)
                self._resync()
                last_answer = time.monotonic()
        return results

    def _give_up(self, jobs, i, failure, pending, noise):
        others = [self._describe(jobs[e[0]]) for e in pending.values() if e[0] != i]
        also = f"; also pending: {', '.join(others[:4])}" + (" ..." if len(others) > 4 else "") \
            if others else ""
        # "No answer" may be a line that carries only bad ones (since the last good answer).
        bad = self._decoder.bad_frames - noise[0]
        junk = self._decoder.discarded - noise[1]
        heard = (f"; {bad} answer{'s' * (bad != 1)} failed the CRC or framing check" if bad else
                 f"; {junk} byte{'s' * (junk != 1)} arrived that held no answer" if junk else "")
        if heard:
            heard += (" (wrong baud rate? not an addershift board?)" if self._identity is None
                      else " (a noisy line?)")
        cls = LinkTimeout if failure.startswith("no answer") and not heard else LinkError
        error = cls(f"the board at {self._url} did not accept {self._describe(jobs[i])} after "
                    f"{self._retries + 1} attempts (last: {failure}){heard}{also}")
        # (a slow board's late answers collide with the requests sent again: bad frames too)
        error.waited_out = failure.startswith("no answer")
        return error

    def _unconfirmed(self, jobs, i, failure):
        return RunUnconfirmed(f"the board at {self._url} did not answer {self._describe(jobs[i])} "
                              f"({failure}): it may or may not have executed it, and a second "
                              f"one would compute on the first one's output")

    def _one(self, cmd, payload, label):
        resp = self._transact([(cmd, payload, label)])[0]
        if resp.status != P.Status.OK:
            raise Refused(f"the board refused {label}: {_status_name(resp.status)}",
                          status=_status(resp.status))
        return resp.payload

    def _decode(self, decode, payload, label):
        try:
            return decode(payload)
        except P.ProtocolError as e:
            raise BadAnswer(f"the board at {self._url} answered {label} with a payload that does "
                            f"not follow the protocol: {e}") from None

    def transact(self, cmd, payload=b"", *, label=None):
        """Send one request (with resends) and return the payload of its ACK; a NAK for an intact
        request raises :class:`Refused`."""
        return self._one(int(cmd), bytes(payload), label or f"command 0x{int(cmd):02x}")

    # --- commands ------------------------------------------------------------------------------

    def identify(self):
        """Ask the board what it is (also done on connection)."""
        return self._decode(P.Identity.decode, self._one(P.Command.IDENTIFY, b"", "IDENTIFY"),
                            "IDENTIFY")

    def echo(self, data=b""):
        data = bytes(data)
        got = self._one(P.Command.ECHO, data, f"ECHO ({len(data)} bytes)")
        if got != data:   # cannot happen with a CRC-checked answer, but never return it unchecked
            raise VerifyError(f"ECHO returned {len(got)} different bytes")
        return got

    def _region(self, region, offset, length, access, what):
        r = self._identity.region(region)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"Offset must be a non-negative integer, not {offset!r}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"Length must be a non-negative integer, not {length!r}")
        if offset + length > r.size:
            raise ValueError(f"{what} of {length} bytes at {r.name}+0x{offset:06x} does not fit "
                             f"region {r.name} ({r.size} bytes)")
        if not r.access & access:
            raise ValueError(f"region {r.name} is not {'writable' if access == P.Access.WRITE else 'readable'}")
        return r

    def write(self, region, offset, data, *, verify=True, progress=None):
        """Write ``data`` at ``offset`` in ``region``, pipelined, then check the region's CRC.

        Raises :class:`LinkError` (or a subclass) if any frame could not be delivered or the CRC
        read-back differs; the message then names the byte range that may be partly written.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"Data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        r = self._region(region, offset, len(data), P.Access.WRITE, "write")
        if verify and not r.access & P.Access.READ:    # refused before anything is written
            raise ValueError(f"region {r.name} is not readable, so a write to it cannot be "
                             f"verified: pass verify=False")
        chunk = self._identity.max_payload - P.WRITE_HEADER
        jobs = []
        for start in range(0, len(data), chunk):
            piece = data[start:start + chunk]
            jobs.append((P.Command.WRITE,
                         P.write_payload(P.address(r.id, offset + start), piece),
                         f"WRITE {r.name}+0x{offset + start:06x} ({len(piece)} bytes)"))
        span = f"{r.name}+0x{offset:06x}..0x{offset + len(data):06x}"
        show = self._progress if progress is None else bool(progress)
        bar = _Progress(f"write {span}", len(data), show and len(data) >= self._progress_min)
        try:
            for attempt in range(self._retries + 1):
                try:
                    answers = self._transact(jobs, window=self._window,
                                             progress=lambda i: bar.update(len(jobs[i][1]) - 4))
                except LinkError as e:
                    raise type(e)(f"{e}; {span} may be partly written") from None
                for (cmd, payload, label), resp in zip(jobs, answers):
                    if resp.status != P.Status.OK:
                        raise Refused(f"the board refused {label}: {_status_name(resp.status)}; "
                                      f"{span} may be partly written",
                                      status=_status(resp.status))
                if not verify:
                    return
                want = P.crc32(data)
                got = self.crc(r.name, offset, len(data))
                if got == want:
                    return
                bar = _Progress(f"rewrite {span}", len(data), bar.enabled)
            raise VerifyError(f"CRC read-back of {span} is 0x{got:08x}, expected 0x{want:08x}, "
                              f"after {self._retries + 1} writes; its contents are wrong")
        finally:
            bar.close()

    def read(self, region, offset, length, *, verify=False):
        """Read ``length`` bytes at ``offset`` in ``region`` (each answer is CRC-checked; with
        ``verify`` the region's CRC-32 is compared too)."""
        r = self._region(region, offset, length, P.Access.READ, "read")
        chunk = self._identity.max_payload
        jobs = [(P.Command.READ, P.read_payload(P.address(r.id, offset + s), min(chunk, length - s)),
                 f"READ {r.name}+0x{offset + s:06x} ({min(chunk, length - s)} bytes)")
                for s in range(0, length, chunk)]
        out = bytearray()
        for (cmd, payload, label), resp in zip(jobs, self._transact(jobs, window=1)):
            want = int.from_bytes(payload[4:6], "little")
            if resp.status != P.Status.OK:
                raise Refused(f"the board refused {label}: {_status_name(resp.status)}"
                              f"{_busy_hint(r, resp.status)}", status=_status(resp.status))
            if len(resp.payload) != want:
                raise LinkError(f"{label} returned {len(resp.payload)} bytes")
            out += resp.payload
        if verify and P.crc32(out) != self.crc(r.name, offset, length):
            raise VerifyError(f"the data read from {r.name}+0x{offset:06x} ({length} bytes) does "
                              f"not match the region's CRC")
        return bytes(out)

    def crc(self, region, offset, length):
        """CRC-32 (``zlib.crc32``) of ``length`` bytes at ``offset`` in ``region``, computed on the
        device."""
        r = self._region(region, offset, length, P.Access.READ, "CRC")
        try:
            payload = self._one(P.Command.CRC, P.crc_payload(P.address(r.id, offset), length),
                                f"CRC {r.name}+0x{offset:06x} ({length} bytes)")
        except Refused as e:
            raise Refused(f"{e}{_busy_hint(r, e.status)}", status=e.status) from None
        if len(payload) != 4:
            raise LinkError(f"CRC answer has {len(payload)} bytes, not 4")
        return int.from_bytes(payload, "little")

    def status(self):
        """Run state, error code, uptime and performance counters."""
        return self._decode(P.decode_status, self._one(P.Command.STATUS, b"", "STATUS"),
                            "STATUS")

    def run(self, argument=0, *, wait=True, timeout=60.0, poll=0.0):
        """Start a run with ``argument``; with ``wait``, poll until it is done and return the
        status (raises :class:`DeviceError` if the device reports an error, and
        :class:`RunUnconfirmed` if RUN's answer was lost and the board is idle: a RUN is never
        sent twice, since a second run would compute on the first one's output)."""
        before = self.status()
        if before.busy:
            raise Refused("the board is still running an earlier run", status=P.Status.BUSY)
        label = f"RUN {argument}"
        try:
            resp = self._transact([(P.Command.RUN, P.run_payload(argument), label)], once=True)[0]
        except RunUnconfirmed as e:
            # Idle before, busy now: the run is ours. Idle now: it ran (a run may be shorter
            # than the timeout) or the RUN never arrived; the caller must redo its inputs.
            if not self.status().busy:
                raise RunUnconfirmed(f"{e}; the board is idle: write the inputs again, then "
                                     f"run") from None
        else:
            if resp.status != P.Status.OK:
                raise Refused(f"the board refused {label}: {_status_name(resp.status)}",
                              status=_status(resp.status))
        if not wait:
            return None
        return self.wait(timeout=timeout, poll=poll, what=label)

    def wait(self, *, timeout=60.0, poll=0.0, what="the run"):
        """Poll STATUS until the device is not busy; raise on its error code or after ``timeout``
        seconds."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if not st.busy:
                if st.error:
                    raise DeviceError(f"the board finished {what} with error {st.error}",
                                      code=st.error)
                return st
            if time.monotonic() > deadline:
                raise LinkTimeout(f"the board was still busy with {what} after {timeout:g} s")
            if poll:
                time.sleep(poll)
