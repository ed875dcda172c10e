"""A skid register on a valid/ready stream, so that the producer's ready is a register's.

A step the consumer does not take as it arrives waits in the skid, and goes first; while the skid
is empty the producer is ready. The skid's data register loads whenever it is empty, so its enable
is a register too. (amaranth.lib has no stream buffer of this kind, so it is written here.)

:func:`credit_skid` is the same for a producer whose steps come out a cycle after it decides to
issue them: two slots, and a registered credit in place of the ready.
"""

from __future__ import annotations

import typing

from amaranth.hdl import Mux, Signal

from .array import REPLICA_SUFFIX

__all__ = ["CreditSkid", "Skid", "credit_skid", "skid"]


class Skid(typing.NamedTuple):
    ready: object       #: the producer's ready (the skid is empty)
    valid: object       #: the consumer's valid
    payload: object     #: the consumer's payload
    held: object        #: the skid holds a step
    held_next: object   #: ``held`` in the next cycle (for registered copies of the handshake)
    held_copies: tuple  #: the copies of ``held`` that select the ``parts``, in their order


def skid(m, valid, payload, ready, name, parts=()):
    """The stream ``valid``/``payload`` through a skid register in ``m``'s sync domain, to a
    consumer whose ready is ``ready``; its signals are named after ``name``.

    ``parts`` are functions that each pick a part of a payload-shaped value: each part's choice
    between the held payload and the arriving one takes a copy of ``held`` of its own (kept apart
    in board builds), so no one register selects every bit of a wide payload spread across the
    die."""
    held = Signal(name=f"{name}_held")
    held_next = Signal(name=f"{name}_held_next")
    held_payload = Signal.like(payload, name=f"{name}_held_payload", reset_less=True)
    out = Signal.like(payload, name=f"{name}_out")
    m.d.comb += [out.eq(Mux(held, held_payload, payload)),
                 held_next.eq(Mux(held, ~ready, valid & ~ready))]
    m.d.sync += held.eq(held_next)
    held_copies = tuple(Signal(name=f"{name}_held{REPLICA_SUFFIX}{k}") for k in range(len(parts)))
    for part, held_copy in zip(parts, held_copies):
        m.d.sync += held_copy.eq(held_next)
        m.d.comb += part(out).eq(Mux(held_copy, part(held_payload), part(payload)))
    with m.If(~held):
        m.d.sync += held_payload.eq(payload)
    return Skid(ready=~held, valid=held | valid, payload=out, held=held, held_next=held_next,
                held_copies=held_copies)


class CreditSkid(typing.NamedTuple):
    credit: object      #: the producer may issue a step this cycle (a register)
    valid: object       #: the consumer's valid
    payload: object     #: the consumer's payload
    pending_next: object    #: steps in flight or waiting next cycle (for a registered ``busy``)


def credit_skid(m, issue, valid, payload, ready, name):
    """Two skid slots for a producer whose steps come out a cycle after it issues them: a step
    issued (``issue``) in one cycle arrives (``valid``/``payload``) in the next and must be taken
    or held as it comes. The producer issues only on ``credit``, a register that is high when
    both a step already on its way and a new one would find a slot even if the consumer
    (``ready``) took nothing more; with the consumer ready it stays high, so one step goes every
    cycle. Each slot's data register loads whenever the slot is free, and the consumer sees the
    arriving step itself while no step waits: no enable or select waits on ``ready``.
    (amaranth.lib has no stream buffer of this kind: its FIFOs take a cycle more and store
    every step.)"""
    slot_full = [Signal(name=f"{name}_slot_full{k}") for k in range(2)]
    slot_data = [Signal.like(payload, name=f"{name}_slot_data{k}", reset_less=True)
                 for k in range(2)]
    head = Signal(name=f"{name}_head")          # the slot the oldest waiting step is in
    tail = Signal(name=f"{name}_tail")          # the slot the next waiting step goes to
    credit = Signal(init=1, name=f"{name}_credit")
    any_waiting = Signal(name=f"{name}_any_waiting")
    m.d.comb += any_waiting.eq(slot_full[0] | slot_full[1])
    store = valid & (any_waiting | ~ready)          # the arriving step waits
    pop = ready & any_waiting                       # the oldest waiting step is taken
    with m.If(store):
        m.d.sync += tail.eq(~tail)
    with m.If(pop):
        m.d.sync += head.eq(~head)
    for k in range(2):
        with m.If(store & (tail == k)):
            m.d.sync += slot_full[k].eq(1)
        with m.Elif(pop & (head == k)):
            m.d.sync += slot_full[k].eq(0)
        with m.If(~slot_full[k]):
            m.d.sync += slot_data[k].eq(payload)
    waiting_next = Signal(range(3), name=f"{name}_waiting_next")
    m.d.comb += waiting_next.eq(slot_full[0] + slot_full[1] + store - pop)
    m.d.sync += credit.eq((waiting_next == 0) | ((waiting_next == 1) & ~issue))
    out = Signal.like(payload, name=f"{name}_out")
    m.d.comb += out.eq(Mux(any_waiting, Mux(head, slot_data[1], slot_data[0]), payload))
    return CreditSkid(credit=credit, valid=any_waiting | valid, payload=out,
                      pending_next=(waiting_next != 0) | issue)
