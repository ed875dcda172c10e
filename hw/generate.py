"""Verilog for a PE or an array, with a JSON sidecar that names its parameters, widths and ports.

``addershift generate`` is a thin layer over :func:`generate`. The sidecar (``OUT.json`` next to
``OUT.v``) is what a testbench or a build script reads instead of parsing Verilog::

    {"format": "addershift-generate", "version": 1, "unit": "array", "top": "adder_4x4",
     "verilog": "adder_4x4.v", "params": {...}, "derived": {...}, "timing": {...},
     "ports": [{"name": "i__payload", "direction": "input", "width": 97}, ...],
     "payload": {"i": [{"field": "x", "offset": 0, "width": 8, "count": 4, "signed": true}, ...],
                 "o": [...]}}

Port names are Amaranth's: the signature path joined with ``__``, plus ``clk`` and ``rst``.
"""

from __future__ import annotations

import json
import pathlib
import re

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from .array import SystolicArray
from .pe import make_pe

__all__ = ["FORMAT", "VERSION", "UNITS", "build_unit", "ports", "sidecar", "generate"]

FORMAT = "addershift-generate"
VERSION = 1
UNITS = ("pe", "array")


def build_unit(unit, *, kind, rows=None, cols=None, x_bits=8, w_bits=None, p_min=None, p_max=None,
               max_length=128):
    """The component for ``unit``: a lone PE (registered inputs) or a :class:`SystolicArray`.

    ``rows`` and ``cols`` are required for an array and must be ``None`` for a PE."""
    widths = dict(x_bits=x_bits, w_bits=w_bits, p_min=p_min, p_max=p_max, max_length=max_length)
    if unit == "pe":
        if rows is not None or cols is not None:
            raise ValueError(f"A PE has no rows or cols (got rows={rows!r}, cols={cols!r})")
        return make_pe(kind, register_inputs=True, **widths)
    if unit == "array":
        return SystolicArray(kind=kind, rows=rows, cols=cols, **widths)
    raise ValueError(f"Unit must be one of {', '.join(UNITS)}, not {unit!r}")


def ports(component):
    """Every port of ``component``'s Verilog module: name, direction and width, in order."""
    out = [{"name": "clk", "direction": "input", "width": 1},
           {"name": "rst", "direction": "input", "width": 1}]
    for path, member, _ in component.signature.flatten(component):
        out.append({
            "name": "__".join(str(p) for p in path),
            "direction": "input" if member.flow == wiring.In else "output",
            "width": Shape.cast(member.shape).width,
        })
    return out


def _fields(layout):
    """Payload fields with bit offsets: arrays give their element width and count."""
    out = []
    for name, field in layout:
        shape = field.shape
        entry = {"field": name, "offset": field.offset}
        if isinstance(shape, data.ArrayLayout):
            elem = shape.elem_shape
            entry.update(width=Shape.cast(elem).width, count=shape.length)
        else:
            elem = shape
            entry.update(width=Shape.cast(shape).width, count=1)
        if isinstance(elem, data.StructLayout):
            entry["layout"] = [{"field": n, "offset": f.offset, "width": Shape.cast(f.shape).width}
                               for n, f in elem]
        else:
            entry["signed"] = Shape.cast(elem).signed
        out.append(entry)
    return out


def sidecar(component, *, top, verilog_name=None):
    """The JSON sidecar's content for ``component``: a PE, a :class:`SystolicArray` or an
    :class:`~.accelerator.AcceleratorTop` (its build parameters, build hash and link settings)."""
    from .accelerator import AcceleratorTop
    if isinstance(component, AcceleratorTop):
        config = component.config
        return {
            "format": FORMAT, "version": VERSION, "unit": "accelerator", "top": top,
            "verilog": verilog_name, "params": config.to_dict(), "build_hash": config.build_hash,
            "derived": {"acc_bits": config.acc_bits, "weight_bits": config.weight_bits,
                        "memory_bits": config.memory_bits},
            "link": {"clk_hz": component.identity.clk_hz, "baud": component.identity.baud,
                     "uart_divisor": component.divisor},
            "ports": ports(component),
        }
    params = component.params()
    if isinstance(component, SystolicArray):
        unit = "array"
        timing = {"latency": component.latency, "readout_cycles": component.readout_cycles,
                  "idle_after_last": component.idle_after_last}
        payload = {"i": _fields(component.in_layout), "o": _fields(component.out_layout)}
    else:
        unit = "pe"
        timing = {"latency": component.latency, "idle_after_last": component.idle_after_last}
        payload = {}
    derived = {"acc_bits": params.pop("acc_bits"),
               "weight_bits": Shape.cast(component.weight_shape).width}
    return {
        "format": FORMAT, "version": VERSION, "unit": unit, "top": top,
        "verilog": verilog_name, "params": params, "derived": derived, "timing": timing,
        "ports": ports(component), "payload": payload,
    }


def _module_name(path):
    name = re.sub(r"[^A-Za-z0-9_]", "_", pathlib.Path(path).stem)
    return name if re.match(r"[A-Za-z_]", name) else f"top_{name}"


def generate(component, output, *, top=None, platform=None):
    """Write ``output`` (Verilog) and the sidecar beside it (same name, ``.json``); return the
    sidecar dict. ``top`` is the module name (default: the file name, made a legal identifier).
    ``platform`` reaches the components' ``elaborate`` (those that pick primitives by its
    ``device``, as :func:`addershift.hw.pe.has_ecp5_carries`)."""
    output = pathlib.Path(output)
    top = top or _module_name(output)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", top):
        raise ValueError(f"Module name must be a Verilog identifier (letters, digits, _; not a "
                         f"digit first), not {top!r}")
    info = sidecar(component, top=top, verilog_name=output.name)
    text = verilog.convert(component, name=top, emit_src=False, platform=platform)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    output.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info
