"""A skid register on a valid/ready stream, so that the producer's ready is a register's.

A step the consumer does not take as it arrives waits in the skid, and goes first; while the skid
is empty the producer is ready. The skid's data register loads whenever it is empty, so its enable
is a register too. (amaranth.lib has no stream buffer of this kind, so it is written here.)
"""

from __future__ import annotations

import typing

from amaranth.hdl import Mux, Signal

from .array import REPLICA_SUFFIX

__all__ = ["Skid", "skid"]


class Skid(typing.NamedTuple):
    ready: object       #: the producer's ready (the skid is empty)
    valid: object       #: the consumer's valid
    payload: object     #: the consumer's payload
    held: object        #: the skid holds a step
    held_next: object   #: ``held`` in the next cycle (for registered copies of the handshake)
    held_copies: tuple  #: the copies of ``held`` that select the ``parts``, in their order


def skid(m, valid, payload, ready, name, parts=(), held_copies=None):
    """The stream ``valid``/``payload`` through a skid register in ``m``'s sync domain, to a
    consumer whose ready is ``ready``; its signals are named after ``name``.

    ``parts`` are functions that each pick a part of a payload-shaped value: each part's choice
    between the held payload and the arriving one takes a copy of ``held`` of its own (kept apart
    in board builds), so no one register selects every bit of a wide payload spread across the
    die. ``held`` itself is then named as a copy too, so board builds keep it apart from them
    (Yosys merged it into one of them up to 1e6506f). The copies are registers following
    ``held``'s rule from their own value, or ``held_copies`` (one per part) when given:
    registers the caller keeps equal to ``held`` in every cycle (say, from copies of the
    handshake of a part's own)."""
    held = Signal(name=f"{name}_held{REPLICA_SUFFIX}_central" if parts else f"{name}_held")
    held_next = Signal(name=f"{name}_held_next")
    held_payload = Signal.like(payload, name=f"{name}_held_payload", reset_less=True)
    out = Signal.like(payload, name=f"{name}_out")
    m.d.comb += [out.eq(Mux(held, held_payload, payload)),
                 held_next.eq(Mux(held, ~ready, valid & ~ready))]
    m.d.sync += held.eq(held_next)
    if held_copies is None:
        held_copies = tuple(Signal(name=f"{name}_held{REPLICA_SUFFIX}{k}")
                            for k in range(len(parts)))
        # Each copy's next value from the copy itself (equal to ``held`` in every cycle), not
        # from ``held``'s: ``held``'s next-value LUT fanned out to copies spread across the die.
        m.d.sync += [held_copy.eq(Mux(held_copy, ~ready, valid & ~ready))
                     for held_copy in held_copies]
    elif len(held_copies) != len(parts):
        raise ValueError(f"{len(parts)} parts need as many copies of held, not "
                         f"{len(held_copies)}")
    held_copies = tuple(held_copies)
    for part, held_copy in zip(parts, held_copies):
        m.d.comb += part(out).eq(Mux(held_copy, part(held_payload), part(payload)))
    with m.If(~held):
        m.d.sync += held_payload.eq(payload)
    return Skid(ready=~held, valid=held | valid, payload=out, held=held, held_next=held_next,
                held_copies=held_copies)
