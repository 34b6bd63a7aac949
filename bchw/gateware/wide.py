"""Registers wider than one Amaranth cell may be."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value

#: The widest single signal used for a register. Amaranth 0.5 numbers a cell's output
#: bits with 16 bits and, where a register of exactly 2**16 bits feeds another module,
#: asks for bit 2**16 and fails an assertion in its netlist builder; the flattened
#: vector of the paper's CIFAR-10 network (4·4·512 values of 8 bits) is that wide.
CHUNK_BITS = 1 << 15


def wide_signal(width: int, name: str, reset_less: bool = True) -> Value:
    """A ``width``-bit register as the concatenation of signals of at most
    :data:`CHUNK_BITS` bits; assign it, slice it and read it like one signal."""
    if width <= CHUNK_BITS:
        return Signal(width, name=name, reset_less=reset_less)
    return Cat(*[Signal(min(CHUNK_BITS, width - lo), name=f"{name}_{k}", reset_less=reset_less)
                 for k, lo in enumerate(range(0, width, CHUNK_BITS))])


def register_copies(m: Module, next_value: Value, count: int, name: str,
                    init: int = 0, enable: Value | None = None,
                    reset_less: bool = False) -> list[Signal]:
    """``count`` registers that all load ``next_value`` every cycle (every cycle ``enable``
    is high, if given): copies of one register, each to drive a part of a wide
    register's enable logic, or of a wide ROM, on its own.

    They carry ``keep``; :mod:`bchw.synth` marks their flip-flops ``keep`` too, since
    yosys would otherwise merge flip-flops with the same input back into one.
    """
    return _kept_registers(m, [next_value] * count, name, init, enable, reset_less)


def register_tree(m: Module, next_value: Value, count: int, name: str, fanout: int,
                  enable: Value | None = None, reset_less: bool = False) -> list[Signal]:
    """``count`` copies of ``next_value`` two registers later: a first level of
    ``ceil(count / fanout)`` copies (``{name}_fan_copy{j}``), each loading ``fanout`` of
    the second (``{name}_copy{k}``), so that no register drives more than ``fanout``
    copies spread over the device, nor the source more than the first level."""
    fans = register_copies(m, next_value, -(-count // fanout), f"{name}_fan", enable=enable,
                           reset_less=reset_less)
    return _kept_registers(m, [fans[k // fanout] for k in range(count)], name, 0, enable,
                           reset_less)


def _kept_registers(m: Module, sources: list[Value], name: str, init: int,
                    enable: Value | None, reset_less: bool) -> list[Signal]:
    """A ``keep`` register ``{name}_copy{k}`` loading ``sources[k]``, for each ``k``."""
    copies = [Signal(Value.cast(src).shape(), name=f"{name}_copy{k}", init=init,
                     reset_less=reset_less, attrs={"keep": 1}) for k, src in enumerate(sources)]
    loads = [c.eq(src) for c, src in zip(copies, sources, strict=True)]
    if enable is None:
        m.d.sync += loads
    else:
        with m.If(enable):
            m.d.sync += loads
    return copies


def output_valid_copies(m: Module, stream, load: Value, count: int) -> list[Signal]:
    """Drive ``stream.valid`` as the register of an output that is filled when ``load``
    and emptied when taken, and return ``count`` copies of it (see
    :func:`register_copies`), one for the enable of each part of the output register."""
    valid_next = Signal(name="valid_next")
    m.d.comb += valid_next.eq(Mux(load, 1, stream.valid & ~stream.ready))
    m.d.sync += stream.valid.eq(valid_next)
    return register_copies(m, valid_next, count, "mvalid")
