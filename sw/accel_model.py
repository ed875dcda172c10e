"""A Python model of the accelerator's algorithm: runs a compiled program from its memory images.

It reads only what the hardware reads (descriptors decoded from the weight image, weight words,
parameter words, activation words) and walks the loops with the same incremental counters as
``hw/im2col.py`` and ``hw/sequencer.py`` (no division or multiplication in the address path), so a
test that compares it with the golden model checks the compiler's layouts and the address scheme
before and beside the hardware. Not cycle-accurate: it counts k-steps, not cycles.
"""

from __future__ import annotations

import numpy as np

from .compiler import DESCRIPTOR_MAGIC, read_descriptor
from .golden import array_op
from .numerics import Op, int_range, round_shift, saturate

__all__ = ["AcceleratorModel", "ProgramError"]


class ProgramError(RuntimeError):
    """The model met a descriptor the hardware would stop at with an error."""


def _field(word, pos, bits, signed=False):
    v = (word >> pos) & ((1 << bits) - 1)
    return v - (1 << bits) if signed and v >> (bits - 1) else v


class AcceleratorModel:
    """Memories of one build plus :meth:`run`, which executes stages like the hardware does.

    ``act`` holds the two activation buffers as lists of word integers (one bank: the hardware's
    ``rows`` banks always hold the same words).
    """

    def __init__(self, program):
        self.program = program
        c = self.config = program.config
        self.weights = list(program.weight_words) + [0] * (c.weight_depth - len(program.weight_words))
        self.params = list(program.param_words) + [0] * (c.param_depth - len(program.param_words))
        self.act = [[0] * c.act_depth, [0] * c.act_depth]
        self.k_steps = 0

    # --- host view ---------------------------------------------------------------------------

    def write_input(self, x):
        data = self.program.input_image(x)
        nb = self.config.act_word_bytes
        for i in range(len(data) // nb):
            self.act[0][i] = int.from_bytes(data[i * nb:(i + 1) * nb], "little")

    def read_output(self, stage=-1):
        region, length = self.program.output_extent(stage)
        buf = self.act[int(region[-1])]
        nb = self.config.act_word_bytes
        data = b"".join(buf[i].to_bytes(nb, "little") for i in range(length // nb))
        return self.program.decode_output(data, stage)

    # --- words -------------------------------------------------------------------------------

    def _lanes(self, word, bits, count):
        mask = (1 << bits) - 1
        return [(word >> (j * bits)) & mask for j in range(count)]

    def _act_lane(self, buf, addr, lane):
        c = self.config
        v = (self.act[buf][addr] >> (lane * c.x_bits)) & ((1 << c.x_bits) - 1)
        return v - (1 << c.x_bits) if v >> (c.x_bits - 1) else v

    def _weight_row(self, addr):
        """The ``cols`` weights of one word as the array sees them (``{name: (cols,)}``)."""
        c = self.config
        raw = np.array(self._lanes(self.weights[addr], c.weight_bits, c.cols), dtype=np.int64)
        if c.pe is Op.SHIFT:
            # Sign codes as hw.pe.Sign: 0b01 +1, 0b11 -1, 0b00 zero (and 0b10, invalid, zero).
            sign = np.choose(raw & 3, [0, 1, 0, -1])
            return {"sign": sign[:, None], "exponent": (raw >> 2)[:, None]}
        w = np.where(raw >> (c.weight_bits - 1), raw - (1 << c.weight_bits), raw)
        return {"weight": w[:, None]}

    def _descriptor(self, stage):
        values = read_descriptor(self.config, self.weights, stage)
        if values["magic"] != DESCRIPTOR_MAGIC:
            raise ProgramError(f"stage {stage}: no descriptor (magic {values['magic']:#x})")
        return values

    def _params(self, addr, lane):
        """The requantisation parameters of lane ``lane`` of parameter word ``addr``."""
        from ..hw.config import requant_lane_fields
        c = self.config
        packed = self.params[addr] >> (lane * c.param_channel_bits)
        out, pos = {}, 0
        for name, bits in requant_lane_fields(c.requant_mode, c.bias_bits):
            out[name] = _field(packed, pos, bits, signed=name in ("bias", "multiplier")
                               or name.startswith("sign"))
            pos += bits
        return out

    # --- execution ---------------------------------------------------------------------------

    def run(self, *, start=0, count=0):
        """Run stages ``start`` .. (``count`` stages, 0: up to the descriptor marked last)."""
        stage = start
        while True:
            d = self._descriptor(stage)
            self._run_stage(stage, d)
            stage += 1
            if d["last"] or (count and stage - start >= count):
                return stage

    def _walk_pixels(self, d, count):
        """The read-side pixel walker: (pixel valid, ih0, iw0, base) for ``count`` pixels of
        raster order, incrementally (as the hardware's walker)."""
        ow_c, ih0, iw0, base, row_base, left = 0, -d["pad"], -d["pad"], d["base0"], d["base0"], \
            d["pixels"]
        for _ in range(count):
            yield left > 0, ih0, iw0, base
            left -= 1
            if ow_c == d["out_w_m1"]:
                ow_c, ih0, iw0 = 0, ih0 + d["stride"], -d["pad"]
                row_base += d["row_step"]
                base = row_base
            else:
                ow_c, iw0, base = ow_c + 1, iw0 + d["stride"], base + d["stride"]

    def _run_stage(self, stage, d):
        c = self.config
        R, C = c.rows, c.cols
        src, dst = stage % 2, (stage + 1) % 2
        rq_addr = d["rq_base"]
        lo, hi = int_range(c.x_bits)
        w_addr = d["w_base"]
        for og in range(d["og_m1"] + 1):
            L = c.lanes
            params = [self._params(rq_addr + j // L, j % L) for j in range(C)]
            rq_addr += C // L
            walker = self._walk_pixels(d, (d["tiles_m1"] + 1) * R)
            writer = _Writer(self, d, dst, og)
            og_w_base = w_addr
            for _ in range(d["tiles_m1"] + 1):
                rows = [next(walker) for _ in range(R)]
                acc = np.zeros((R, C), dtype=np.int64)
                w_addr = og_w_base
                for kh in range(d["kh_m1"] + 1):
                    for kw in range(d["kw_m1"] + 1):
                        offset, lane = kh * d["in_w"] + kw, 0   # + channel group * H * W
                        for _ in range(d["cin_m1"] + 1):
                            x = np.zeros(R, dtype=np.int64)
                            for r, (valid, ih0, iw0, base) in enumerate(rows):
                                if (valid and 0 <= ih0 + kh < d["in_h"]
                                        and 0 <= iw0 + kw < d["in_w"]):
                                    x[r] = self._act_lane(src, base + offset, lane)
                            acc += array_op(c.pe, x[:, None], self._weight_row(w_addr), p_min=0)
                            w_addr += 1
                            self.k_steps += 1
                            lane += 1
                            if lane == C:
                                lane, offset = 0, offset + d["in_hw"]
                for r in range(R):
                    y = np.array([_requant(acc[r, j], params[j], c.requant_mode.value, lo, hi,
                                           d["relu"]) for j in range(C)])
                    writer.push(y)
            writer.finish()


def _requant(acc, p, mode, lo, hi, relu):
    z = int(acc) + p["bias"]
    if mode == "shift":
        m, k = 1, p["shift"]
    elif mode == "pow2x2":
        k = max(p["shift1"], p["shift2"])
        m = p["sign1"] * (1 << (k - p["shift1"])) + p["sign2"] * (1 << (k - p["shift2"]))
    else:
        m, k = p["multiplier"], p["shift"]
    y = int(np.clip(round_shift(z * m, k), lo, hi))
    return max(y, 0) if relu else y


class _Writer:
    """The write side of one output channel group: pooling walker, read-modify-write, GAP sums."""

    def __init__(self, model, d, dst, og):
        self.m, self.d, self.dst = model, d, dst
        self.left = d["pixels"]
        self.ow_c = self.dw = self.pw = self.dh = self.ph = 0
        self.row_dest = og * d["out_hw"]
        self.gap_sum = None
        self.og = og

    def _word(self, values):
        c = self.m.config
        word = 0
        for j, v in enumerate(values):
            word |= (int(v) & ((1 << c.x_bits) - 1)) << (j * c.x_bits)
        return word

    def push(self, y):
        d, c = self.d, self.m.config
        if self.left <= 0:
            return                      # rows past the last pixel of the layer
        self.left -= 1
        if d["gap"]:
            self.gap_sum = y.copy() if self.gap_sum is None else self.gap_sum + y
            if self.left == 0:
                out = saturate(round_shift(self.gap_sum, d["gap_shift"]), c.x_bits)
                self.m.act[self.dst][self.row_dest] = self._word(out)
            return
        k = d["pool_k"]
        if self.dh < k and self.dw < k and self.ph < d["pool_h"] and self.pw < d["pool_w"]:
            dest = self.row_dest + self.pw
            if d["pool"] and not (self.dh == 0 and self.dw == 0):
                old = [self.m._act_lane(self.dst, dest, j) for j in range(c.cols)]
                y = np.maximum(y, old)
            self.m.act[self.dst][dest] = self._word(y)
        # Advance the conv-output position (oh, ow) and its pooling coordinates.
        if self.ow_c == d["out_w_m1"]:
            self.ow_c = self.dw = self.pw = 0
            if self.dh == d["pool_s"] - 1:
                self.dh = 0
                self.ph += 1
                self.row_dest += d["pool_w"]
            else:
                self.dh += 1
        else:
            self.ow_c += 1
            if self.dw == d["pool_s"] - 1:
                self.dw, self.pw = 0, self.pw + 1
            else:
                self.dw += 1

    def finish(self):
        if self.left:
            raise AssertionError("writer finished early")
