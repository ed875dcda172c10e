"""The layer descriptor as a hardware layout: ``sw.compiler.descriptor_fields`` as a StructLayout.

The compiler packs descriptors from the same field list, least significant first, so a descriptor
word loaded from the weight memory reads as this layout with no conversion.
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from ..sw.compiler import WRITE_FIELDS, descriptor_fields

__all__ = ["descriptor_layout", "write_layout"]


def descriptor_layout(config):
    """The ``StructLayout`` of one descriptor of build ``config``."""
    return data.StructLayout({name: signed(bits) if is_signed else unsigned(bits)
                              for name, bits, is_signed in descriptor_fields(config)})


def write_layout(config):
    """The fields of :data:`compiler.WRITE_FIELDS` only: what the write side of a stage reads."""
    return data.StructLayout({name: signed(bits) if is_signed else unsigned(bits)
                              for name, bits, is_signed in descriptor_fields(config)
                              if name in WRITE_FIELDS})
