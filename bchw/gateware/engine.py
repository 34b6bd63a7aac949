"""A layer engine: the layer's matrix folded over PE output neurons × SIMD input lanes."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bchw.gateware.adder_tree import AdderTree
from bchw.gateware.requantizer import Requantizer
from bchw.gateware.rom import Rom
from bchw.gateware.wide import (output_valid_copies, register_copies, register_tree,
                                wide_signal)
from bchw.golden import LayerWidths
from bchw.perf import (CREDIT_RETURN_STAGES, MEMORY_READY_COPIES, REQUANT_STAGES, ROM_STAGES,
                       XTREE_FANOUT, drain_fields, drain_stages, enable_copies, enable_parts,
                       engine_pipeline, input_memory_parts, item_parts, param_rom_parts,
                       requant_share, skid_groups, skid_parts, tree_depth)

#: How an engine computes ``Σ ±x`` with ±1 weights: a conditional-negate tree per PE
#: (``negate``), or ``2·Σ_{w=+1} x − Σ x`` with one ``Σ x`` tree shared by all PEs (``shared``).
DATAPATHS = ("negate", "shared")


class LayerEngine(wiring.Component):
    """Computes one layer for one input vector every ``NF·SF`` cycles.

    Each cycle it reads one ``PE·SIMD·weight_bits``-bit weight word and adds
    ``SIMD`` inputs into ``PE`` accumulators through :class:`AdderTree` s; after ``SF``
    cycles the ``PE`` sums are requantized and collected, and after ``NF``
    such groups the whole output vector is offered downstream.  The next
    input vector is accepted while the last step of the current one issues,
    so back-to-back vectors need no bubble.

    With ``SF ≥ 2`` the groups shift straight into the output register and
    nothing after the issue side ever stalls: a group that arrives while that
    register still holds a vector not being taken waits in a skid buffer of
    :func:`bchw.perf.skid_groups` groups, and a group's first step issues only
    with a credit, which comes back (through
    :data:`bchw.perf.CREDIT_RETURN_STAGES` registers) when the group enters
    the output register.  So no control signal has to reach the whole engine
    in one cycle, which a large engine spread over the device could not do at
    150 MHz; nor does one enable reach its whole input buffer or output
    register: they load in parts (:func:`bchw.perf.enable_parts`), each under
    copies of the registers its enable is made of, the issue decision among
    them, registered a cycle ahead.  With ``SF = 1`` the groups are collected
    apart and the whole engine stalls when a vector's last group meets a full
    output register; the stall depends on this engine's registers only (not
    on ``m.ready``), so ready paths stay within one stage.
    :func:`bchw.perf.engine_pipeline` gives the latency.

    With SF ≥ 2 the PEs also share requantizers, ``share`` =
    :func:`bchw.perf.requant_share` PEs one: a group's sums, with their parameters, are
    taken into a drain register that shifts them on, one a cycle, into each
    requantizer; each one's results but the last wait in a chain, and the group is
    complete ``share`` cycles after the accumulators. So an engine of SF ≥ PE has one
    requantizer (its multiplier's DSP blocks in one place) instead of PE.

    With ``beat_lanes`` (a divisor of ``SIMD``, with ``SF ≥ 2``: the first
    engine of a multilayer perceptron fed the input beats, or an engine fed
    the groups of one with ``group_output``) the engine takes
    its input vector ``beat_lanes`` elements a beat into a memory of two
    banks, a vector a bank, read a slice a step, instead of whole vectors
    into a register that rotates: the handshake and the cycles are those of
    an :class:`InputAssembler` of ``beat_lanes`` lanes in front of the
    engine, but no register holds the vector (twice), and no enable reaches
    thousands of flip-flops.

    With ``group_output`` (``SF ≥ 2``) the engine hands its output on a group
    of ``PE`` values a beat (``NF`` beats a vector, the last one's values
    beyond ``out_features`` padding), straight from its skid buffer, to a
    next engine that takes them into its input memory (``beat_lanes`` = this
    ``PE``): that engine's ``s.ready`` is what this one's output register
    would have said, so the groups move on the same cycles as into it.

    ``datapath`` (one of :data:`DATAPATHS`) chooses how ±1 weights are
    applied; both give the same bits at the same cycles, so which costs less
    is a synthesis measurement.  The ``shared`` one adds the per-step
    ``2·Σ_{w=+1} x − Σ x`` in the accumulate stage, keeping the pipeline
    depth.  ``weight_bits`` above 1 makes the weights signed integers,
    multiplied in the trees: the baseline of :mod:`bchw.gateware.baseline`,
    with the same folding and timing and a ``widths`` for its accumulator.
    ``mul_instance``: the requantizers' multipliers are ``bchw_mul`` instances
    (:class:`bchw.gateware.multiplier.Multiplier`; what ``from_layer`` gives the
    ``readmemh`` mode, whose Verilog comes with that module).

    Members
    -------
    s : In(stream.Signature(in_features · in_bits))
        Input vector, element ``i`` at bits ``[i·in_bits, (i+1)·in_bits)``. With
        ``beat_lanes``: In(stream.Signature(beat_lanes · in_bits)), element ``i`` of a
        vector in beat ``i // beat_lanes``, lane ``i % beat_lanes``; the lanes of the
        last beat beyond ``in_features`` are dropped.
    m : Out(stream.Signature(out_features · out_bits))
        Output vector, likewise (two's complement for the score layer). With
        ``group_output``: Out(stream.Signature(pe · out_bits)), output ``j`` of a vector in
        beat ``j // pe``, lane ``j % pe``.
    s_ready_copies : Out(enable_copies(sf · simd · in_bits))
        SF ≥ 2 without ``beat_lanes``: copies of the register that drives ``s.ready``, one
        a part of the input buffer (:func:`bchw.perf.enable_parts`), for the upstream
        engine's output register. With ``beat_lanes``: Out(MEMORY_READY_COPIES), copies
        of ``s.ready`` as registers of its own (:data:`bchw.perf.MEMORY_READY_COPIES`),
        for the skid slots of the upstream engine that hands it groups.
    m_ready_copies : In(ready_copies)
        With ``ready_copies``: the downstream engine's ``s_ready_copies``, which the parts
        of the output register look at instead of ``m.ready`` (part ``k`` at copy ``k``,
        the last one past the end): from one register, the ready reached every part
        across both engines (the 500,000/s folding's critical path, 5.5 ns of routing);
        with ``group_output``, which the skid slots' parts look at (part ``j``, counted
        over the slots' :func:`bchw.perf.skid_parts`, at copy ``j % ready_copies``).
    """

    def __init__(self, *, in_features: int, out_features: int, in_bits: int, pe: int,
                 simd: int, widths: LayerWidths, nf: int, sf: int,
                 weight_rom: dict, param_rom: dict, datapath: str = "negate",
                 weight_bits: int = 1, tree_levels: int = 1,
                 beat_lanes: int | None = None, group_output: bool = False,
                 mul_instance: bool = False, ready_copies: int = 0):
        if datapath not in DATAPATHS:
            raise ValueError(f"datapath must be one of {DATAPATHS}, not {datapath!r}")
        if weight_bits > 1 and datapath != "negate":
            raise ValueError(f"the {datapath} datapath needs ±1 weights (weight_bits 1)")
        if beat_lanes is not None and not (sf >= 2 and simd % beat_lanes == 0):
            self._MustUse__silence = True     # refused: no "never elaborated" warning
            raise ValueError(f"beat_lanes ({beat_lanes}) must divide SIMD ({simd}), with "
                             f"SF ≥ 2 (SF is {sf})")
        if group_output and sf < 2:
            self._MustUse__silence = True
            raise ValueError(f"group_output needs SF ≥ 2 (SF is {sf})")
        if ready_copies and sf < 2:
            self._MustUse__silence = True
            raise ValueError(f"ready_copies needs SF ≥ 2 (SF is {sf})")
        self.n_in, self.n_out, self.in_bits = in_features, out_features, in_bits
        self.pe, self.simd, self.nf, self.sf = pe, simd, nf, sf
        self.widths = widths
        self.weight_rom, self.param_rom = weight_rom, param_rom
        self.datapath, self.weight_bits = datapath, weight_bits
        self.tree_levels, self.beat_lanes = tree_levels, beat_lanes
        self.group_output, self.mul_instance = group_output, mul_instance
        self.ready_copies = ready_copies
        members = {
            "s": In(stream.Signature((beat_lanes or in_features) * in_bits)),
            "m": Out(stream.Signature((pe if group_output else out_features)
                                      * widths.out_bits))}
        if sf >= 2:
            members["s_ready_copies"] = Out(MEMORY_READY_COPIES if beat_lanes else
                                            enable_copies(sf * simd * in_bits))
        if ready_copies:
            members["m_ready_copies"] = In(ready_copies)
        super().__init__(members)

    @classmethod
    def from_layer(cls, layer, rom_mode: str, datapath: str = "negate",
                   tree_levels: int = 1, beat_lanes: int | None = None,
                   group_output: bool = False, ready_copies: int = 0) -> LayerEngine:
        """An engine for a :class:`bchw.export.LayerBundle`."""
        from bchw.export import pack_params, pack_weights

        if rom_mode == "inline":
            wrom = {"init": pack_weights(layer.weights, layer.pe, layer.simd)}
            prom = {"init": pack_params(layer.mul, layer.shift, layer.bias, layer.pe,
                                        layer.widths)}
        else:
            wrom, prom = {"init_file": layer.weight_file}, {"init_file": layer.param_file}
        return cls(in_features=layer.in_features, out_features=layer.out_features,
                   in_bits=layer.in_bits, pe=layer.pe, simd=layer.simd, widths=layer.widths,
                   nf=layer.nf, sf=layer.sf, weight_rom=wrom, param_rom=prom,
                   datapath=datapath, tree_levels=tree_levels, beat_lanes=beat_lanes,
                   group_output=group_output, mul_instance=rom_mode == "readmemh",
                   ready_copies=ready_copies)

    def elaborate(self, platform):
        m = Module()
        w = self.widths
        pe, simd, nf, sf, ib = self.pe, self.simd, self.nf, self.sf, self.in_bits
        wb = self.weight_bits
        steps = nf * sf
        slice_bits = simd * ib
        share = requant_share(pe, sf)

        m.submodules.weights = wrom = Rom(pe * simd * wb, steps, **self.weight_rom)
        # the parameters: one ROM, or (in logic) a ROM a PE, each reading its PE's bits of
        # the image from its own copy of the address register (perf.param_rom_parts)
        param_parts = param_rom_parts(pe, w.param_bits, nf)
        proms = [Rom(pe * w.param_bits // param_parts, nf, **self.param_rom,
                     lo=k * pe * w.param_bits // param_parts, image_width=pe * w.param_bits)
                 for k in range(param_parts)]
        for k, prom in enumerate(proms):
            m.submodules[f"params{k}" if param_parts > 1 else "params"] = prom

        # With SF ≥ 2 (``credit``) the pipeline never stalls: groups that find the output
        # register full wait in a skid buffer, and the issue side waits for a credit
        # instead (see perf._CreditEngine); no signal has to reach the whole engine in one
        # cycle. With SF = 1 the whole engine stalls when a vector's last group meets a full
        # output register: ``en`` drives every register; the stall does not look at
        # ``m.ready``, so no combinational path runs from one engine's ready back through
        # the next, and ``en`` is itself a register, loaded with the stall condition's next
        # value (below).
        credit = sf > 1
        en = Const(1) if credit else Signal(init=1)
        out_done = Signal()           # the last group of a vector is at the requantizer output

        # --- issue: one (nf, sf) step per cycle. A vector is loaded when offered while
        # ready; its steps then advance one a cycle (an engine of SF ≥ 2 starts a group only
        # with a credit) up to the last, which ends it. Each state register takes its
        # ``_next`` value, written as one expression (a continuous assignment in Verilog,
        # which every simulator evaluates from time 0), so that registers can be loaded a
        # cycle ahead with what is computed from them: the issue decision, and the copies
        # of the input buffer's enables.
        def state(reg, value):
            nxt = Signal.like(reg, name=f"{reg.name}_next")
            m.d.comb += nxt.eq(Mux(en, value, reg))
            m.d.sync += reg.eq(nxt)
            return nxt

        busy = Signal()
        step = Signal(range(steps))
        sfc = Signal(range(sf))
        nfc = Signal(range(nf))
        last_step = Signal()          # busy & (step == steps - 1), as a register
        if credit:
            groups = skid_groups(sf, engine_pipeline(simd, self.tree_levels, share))
            credits = Signal(range(groups + 1), init=groups)
            issue = Signal()          # busy & ((sfc != 0) | (credits != 0)), as a register
            # a vector's last step issues whenever it is reached (it starts no group), so
            # s.ready is ~busy | last_step: kept as a register of its own, since it heads
            # the path through the upstream stage's handshake
            ready = Signal(init=1)
        else:
            issue = busy
            ready = en & (~busy | last_step)
        # a whole input vector is offered: by the upstream stream, or (beat_lanes) by the
        # input memory, which holds one in a bank (set after its last beat)
        offered = Signal() if self.beat_lanes else self.s.valid
        load = offered & ready
        advance = issue & ~last_step
        group_end = sfc == sf - 1
        busy_n = state(busy, Mux(load, 1, busy & ~last_step))
        step_n = state(step, Mux(load, 0, Mux(advance, step + 1, step)))
        # the weight ROM reads at a copy of ``step`` of its own: ``step`` also heads the
        # issue logic, which held it away from the ROM's block RAMs (20 at the 500,000/s
        # folding; 6.7 ns to the farthest, a placement's critical path)
        waddr = register_copies(m, step_n, 1, "waddr")[0] if steps > 1 else step
        m.d.comb += [wrom.en.eq(en), wrom.addr.eq(waddr)]
        sfc_n = state(sfc, Mux(load | (advance & group_end), 0, Mux(advance, sfc + 1, sfc)))
        state(nfc, Mux(load, 0, Mux(advance & group_end, nfc + 1, nfc)))
        last_n = state(last_step, Mux(load, steps == 1, Mux(last_step, 0, Mux(
            issue, step == steps - 2, last_step))))
        if credit:
            ready_n = state(ready, Mux(load, 0, Mux(last_step, 1, Mux(
                issue, step == steps - 2, ready))))   # SF ≥ 2: two steps at least
            # a group's first step takes a credit; it comes back CREDIT_RETURN_STAGES
            # cycles after the group entered the output register (``credit_back``, below)
            credit_back = Signal()
            credits_n = state(credits, credits + credit_back - (issue & (sfc == 0)))
            issue_n = state(issue, busy_n & ((sfc_n != 0) | (credits_n != 0)))
        if self.beat_lanes:
            x0 = self._input_memory(m, offered, ready, ready_n, load, sfc_n)
        elif credit:
            m.d.comb += self.s.ready.eq(ready)
            # the input buffer loads a vector, or rotates by one slice at each step but a
            # vector's last; part by part under copies of ready and of that shift, so no
            # enable reaches the whole buffer (loading and shifting never coincide: ready
            # is ~busy | last_step)
            xbuf = wide_signal(sf * slice_bits, "xbuf")
            pay = Signal(len(xbuf))
            m.d.comb += pay.eq(self.s.payload)
            rotated = Cat(xbuf[slice_bits:], xbuf[:slice_bits])
            parts = enable_parts(len(xbuf))
            shifts = register_copies(m, issue_n & ~last_n, len(parts), "xshift")
            readies = register_copies(m, ready_n, len(parts), "xready", init=1)
            m.d.comb += self.s_ready_copies.eq(Cat(*readies))
            for (lo, hi), shift, ready_c in zip(parts, shifts, readies, strict=True):
                with m.If(shift | (self.s.valid & ready_c)):
                    m.d.sync += xbuf[lo:hi].eq(Mux(shift, rotated[lo:hi], pay[lo:hi]))
            x0 = xbuf[:slice_bits]
        else:
            m.d.comb += self.s.ready.eq(ready)
            xbuf = wide_signal(slice_bits, "xbuf")
            with m.If(en & load):   # SF = 1: the buffer is one slice, it never shifts
                m.d.sync += xbuf.eq(self.s.payload)
            x0 = xbuf

        # --- stage 1: the ROM word arrives; stages 2 to ROM_STAGES: it is registered (a
        # block RAM's clock-to-output is most of a cycle on ECP5) and carried to the trees,
        # the input slice and flags with it
        def delayed(value, stages, name, reset_less=False):
            """``value`` delayed by ``stages`` enabled cycles."""
            for k in range(stages):
                r = Signal(Value.cast(value).shape(), name=f"{name}_d{k}",
                           reset_less=reset_less)
                with m.If(en):
                    m.d.sync += r.eq(value)
                value = r
            return value

        # the input memory's read port is the first of these registers (a block RAM's,
        # like the weight ROM's: see ROM_STAGES). The last one is a copy a tree: every PE
        # adds the same inputs, and from one register their negations were one carry chain
        # a lane, which yosys shares between the PEs, its result routed across the device
        # to each of them (the 500,000/s folding's critical path, 6.9 ns). The one before
        # it is a copy every XTREE_FANOUT trees: from one register beside the input memory,
        # the slice reached 16 PEs' copies across the device (7.4 ns). The input memory's
        # read data is registered beside it first (``xmem``)
        x_pre = (delayed(x0, ROM_STAGES - 3, "xmem", reset_less=True) if self.beat_lanes
                 else delayed(x0, ROM_STAGES - 2, "x", reset_less=True))
        x_trees = register_tree(m, x_pre, pe + (self.datapath == "shared"), "xtree",
                                XTREE_FANOUT, enable=None if credit else en, reset_less=True)
        # (a ROM read in rows registers its rows' words itself: perf.rom_rows)
        wdata = delayed(wrom.data, ROM_STAGES - wrom.latency, "wdata", reset_less=True)
        flags = Cat(issue, sfc == 0, sfc == sf - 1, last_step)   # (nfc: its own chain, below)

        # --- adder trees, one per PE (and the shared Σ x one)
        lane = {"negate": "negate", "shared": "mask"}[self.datapath] if wb == 1 else "multiply"
        trees = []
        for p in range(pe):
            tree = AdderTree(simd, ib, lane, wb, self.tree_levels)
            m.submodules[f"tree{p}"] = tree
            m.d.comb += [tree.en.eq(en), tree.x.eq(x_trees[p]),
                         tree.w.eq(wdata[p * simd * wb:(p + 1) * simd * wb])]
            trees.append(tree)
        if self.datapath == "shared":
            m.submodules.tree_sum = total = AdderTree(simd, ib, "mask", levels=self.tree_levels)
            # every lane weighted +1: Σ x, the term common to all PEs
            m.d.comb += [total.en.eq(en), total.x.eq(x_trees[pe]), total.w.eq((1 << simd) - 1)]
            terms = [(tree.sum << 1) - total.sum for tree in trees]
        else:
            terms = [tree.sum for tree in trees]
        # the params of a group are addressed two cycles before its sums leave the trees,
        # so that they arrive registered twice, with the accumulator: the second register
        # feeds only its PE's requantizer (its DSPs), so it is placed beside them
        depth = tree_depth(simd, self.tree_levels)
        flags_pre = delayed(flags, ROM_STAGES + depth - 1, "f")
        flags_t = delayed(flags_pre, 1, "ft")
        valid_t, lastsf_t, end_t = flags_t[0], flags_t[2], flags_t[3]
        # each PE's accumulator takes a group's valid and first flags from copies of its own:
        # from one register they reached every accumulator bit of the engine (the
        # 500,000/s folding's critical path, 5.8 ns of routing)
        acc_flags = register_copies(m, flags_pre[:2], pe, "accflags",
                                    enable=None if credit else en)
        addr_d = delayed(nfc, ROM_STAGES + depth - 3, "paddr")
        addrs = (register_copies(m, addr_d, param_parts, "paddr", enable=en) if param_parts > 1
                 else [delayed(addr_d, 1, "paddr_last")])
        for prom, addr in zip(proms, addrs, strict=True):
            m.d.comb += [prom.en.eq(en), prom.addr.eq(addr)]
        params = delayed(Cat(*[prom.data for prom in proms]), 2, "params", reset_less=True)

        # --- accumulate
        accs = [Signal(signed(w.acc_bits), name=f"acc{p}", reset_less=True) for p in range(pe)]
        acc_valid = Signal()
        acc_end = Signal()
        group_done = valid_t & lastsf_t       # the accumulators hold a group's sums next
        with m.If(en):
            m.d.sync += [acc_valid.eq(group_done), acc_end.eq(valid_t & end_t)]
            for acc, term, (valid_p, first_p) in zip(accs, terms, acc_flags, strict=True):
                with m.If(valid_p):
                    m.d.sync += acc.eq(term if sf == 1 else Mux(first_p, 0, acc) + term)

        # --- requantize: a requantizer a PE, or (share ≥ 2) one a ``share`` PEs in turn
        items = [Cat(acc, params[p * w.param_bits:(p + 1) * w.param_bits])
                 for p, acc in enumerate(accs)]
        if share == 1:
            heads = items
        else:
            heads = self._drain(m, items, share, group_done, drain_fields(w, nf))
        qs = []
        for k, head in enumerate(heads):
            rq = Requantizer(w, mul_instance=self.mul_instance)
            m.submodules[f"requant{k}"] = rq
            field = head[w.acc_bits:]
            m.d.comb += [rq.en.eq(en), rq.acc.eq(head[:w.acc_bits]),
                         rq.mul.eq(field[:w.mul_bits]),
                         rq.shift.eq(field[w.mul_bits:w.mul_bits + w.shift_bits]),
                         rq.bias.eq(field[w.mul_bits + w.shift_bits:])]
            qs.append(rq.q.as_unsigned())
        # the group is complete ``share`` cycles after the accumulators (share ≥ 2): a
        # cycle into the drain, then one a sum
        wait = REQUANT_STAGES + drain_stages(share)
        qv_pre = delayed(acc_valid, wait - 1, "qv")
        qe_pre = delayed(acc_end, wait - 1, "qe")
        q_valid = delayed(qv_pre, 1, "qv_last")
        q_end = delayed(qe_pre, 1, "qe_last")
        m.d.comb += out_done.eq(q_valid & q_end)
        # --- collect the groups; the last one completes the output vector. With SF ≥ 2
        # they shift straight into the output register (the vector is held once) or wait
        # in the skid buffer. With SF = 1 a group follows the last one at once, so the
        # groups are collected apart, and only a finished vector stalls the engine.
        group_bits = pe * w.out_bits
        if share == 1:
            group = Cat(*qs)
        else:
            # each requantizer's results of a group but the last wait in a chain
            chains = []
            for k, q in enumerate(qs):
                chain = Signal((share - 1) * w.out_bits, name=f"results{k}", reset_less=True)
                m.d.sync += chain.eq(Cat(chain[w.out_bits:], q))
                chains.append(Cat(chain, q))
            group = Cat(*chains)[:group_bits]
        out_bits = self.n_out * w.out_bits
        assert (engine_pipeline(simd, self.tree_levels, share)
                == ROM_STAGES + depth + 1 + wait + 1)
        if credit:
            enter = self._skid(m, group, q_valid, qv_pre, q_end, groups, nf)
            # a group's entry gives its credit back CREDIT_RETURN_STAGES cycles later; a
            # group's first step takes one
            m.d.comb += credit_back.eq(delayed(enter, CREDIT_RETURN_STAGES, "credit_back"))
            return m
        if nf > 1:
            collected = wide_signal((nf - 1) * group_bits, "collected")
            with m.If(en & q_valid & ~q_end):
                m.d.sync += collected.eq(Cat(collected[group_bits:], group))
        with m.If(en & q_valid & q_end):
            m.d.sync += self.m.valid.eq(1)
            full = Cat(collected, group) if nf > 1 else group
            m.d.sync += self.m.payload.eq(full[:out_bits])
        with m.Elif(self.m.ready):
            m.d.sync += self.m.valid.eq(0)
        # the stall condition of the next cycle: ~(m.valid & a vector's last group arrives)
        # after this edge
        valid_next = (en & out_done) | (self.m.valid & ~self.m.ready)
        m.d.sync += en.eq(~(valid_next & Mux(en, qv_pre & qe_pre, out_done)))
        return m

    def _drain(self, m: Module, items: list[Value], share: int, loading: Value,
               fields: list[int]) -> list[Value]:
        """Shared requantizers: a register takes the PEs' sums with their parameters
        (``items``, each of ``fields``) at the edge the accumulators hold them (``loading``
        is the accumulators' valid's next value) and shifts them on, one a cycle, to the
        heads of its chains, one chain of ``share`` items a requantizer; returns the heads.
        Loaded part by part under copies of the load (:func:`bchw.perf.item_parts`): no
        part across two items, nor across a sum and its parameters, which come from the PE
        and from the parameter ROM (a copy of the load of a whole item was routed 6.6 ns to
        one of its bits at 500,000/s). A chain's
        last item keeps its value, so a parameter bit the same for every neuron is a
        constant (the register is named for ``bchw.synth.UNINITIALISED_REGISTERS``)."""
        ib = len(items[0])
        lanes = -(-len(items) // share)
        padded = items + [Const(0, ib)] * (lanes * share - len(items))
        drain = wide_signal(lanes * share * ib, "drain")
        chains = [drain[k * share * ib:(k + 1) * share * ib] for k in range(lanes)]
        shifted = Cat(*[Cat(c[ib:], c[-ib:]) for c in chains])
        loaded = Cat(*padded)
        parts = item_parts(lanes * share, fields)
        for (lo, hi), load in zip(parts, register_copies(m, loading, len(parts), "dload"),
                                  strict=True):
            m.d.sync += drain[lo:hi].eq(Mux(load, loaded[lo:hi], shifted[lo:hi]))
        return [c[:ib] for c in chains]

    def _input_memory(self, m: Module, offered: Signal, ready: Value, ready_next: Value,
                      load: Value, sfc_next: Value) -> Value:
        """beat_lanes: beats write into a memory of two banks, vector ``n`` into bank
        ``n % 2``, slice ``k`` at word ``k``, a beat into one word (``beat_lanes`` divides
        SIMD). ``offered`` is set after a vector's last beat and cleared when the vector
        is loaded (an :class:`InputAssembler`'s ``m.valid``); a beat is taken while no
        vector waits, or in the cycle one is loaded (``s.ready`` is ``~offered | ready``,
        ``s_ready_copies`` registers of that loaded from the next values of both): the
        bank it writes was then read for the last time, at another word. Returns the
        slice of step ``sfc`` (whose next value is ``sfc_next``) of the loaded vector one
        cycle later (the read port's register).

        Pixels past the last beat's word of a vector are never written: they stay the
        memory's initial zeros, so padding adds nothing; the lanes of the last beat
        beyond the inputs are written as zeros."""
        sf, lanes, ib = self.sf, self.beat_lanes, self.in_bits
        per_word = self.simd // lanes
        beats = -(-self.n_in // lanes)
        word = Signal(range(sf))
        lane = Signal(range(per_word))      # the beat's place in its word
        write_bank = Signal()
        read_bank = Signal(init=1)          # the loaded vector's bank: toggles at each load
        # (word, lane) is the place of a vector's last beat: a register, loaded when a beat
        # is taken with whether the next place is. It heads the path to ``offered`` and the
        # ready copies, which from a comparison of ``word`` and ``lane`` was 4 LUT levels
        # and 6.2 ns of routing (a placement's critical path at 500,000/s)
        last_word, last_lane = (beats - 1) // per_word, (beats - 1) % per_word
        last_beat = Signal(init=int(beats == 1))
        word_end = lane == per_word - 1
        m.d.comb += self.s.ready.eq(~offered | ready)
        take = self.s.valid & self.s.ready
        next_last = Mux(last_beat, beats == 1, Mux(
            word_end, (word == last_word - 1) & (last_lane == 0),
            (word == last_word) & (lane == last_lane - 1)))
        with m.If(take):
            m.d.sync += [lane.eq(Mux(last_beat | word_end, 0, lane + 1)),
                         word.eq(Mux(last_beat, 0, Mux(word_end, word + 1, word))),
                         last_beat.eq(next_last)]
        with m.If(take & last_beat):
            m.d.sync += write_bank.eq(~write_bank)
        with m.If(load):
            m.d.sync += read_bank.eq(~read_bank)
        offered_next = Mux(take & last_beat, 1, offered & ~ready)
        m.d.sync += offered.eq(offered_next)
        m.d.comb += self.s_ready_copies.eq(Cat(*register_copies(
            m, ~offered_next | ready_next, MEMORY_READY_COPIES, "sready", init=1)))
        kept = (self.n_in - (beats - 1) * lanes) * ib
        data = self.s.payload
        if kept < lanes * ib:
            data = Cat(data[:kept], Mux(last_beat, 0, data[kept:]))
        # The memory is in parts (perf.input_memory_parts), each with its own copies of the
        # address registers. A beat is written a cycle after it is taken, from registers:
        # a vector's first slice is read two cycles after its last beat is taken at the
        # soonest (``offered``, then ``read_bank``, are registers), and a bank is written
        # only after its vector's last read.
        beat = Signal(lanes * ib, name="xbeat", reset_less=True)
        m.d.sync += beat.eq(data)
        enables = Mux(take, 1 << lane, 0)
        parts = input_memory_parts(self.simd, ib, lanes)
        write_addrs = register_copies(m, Cat(word, write_bank), len(parts), "xwaddr")
        read_addrs = register_copies(m, Cat(sfc_next, read_bank ^ load), len(parts), "xraddr",
                                     init=1 << (sf - 1).bit_length())
        words = 2 << (sf - 1).bit_length()
        slices = []
        for k, ((lo, hi), waddr, raddr) in enumerate(zip(parts, write_addrs, read_addrs,
                                                         strict=True)):
            first, last = lo // (lanes * ib), (hi - 1) // (lanes * ib)
            # the beats a part holds: whole ones, or bits of one
            whole = first != last or hi - lo == lanes * ib
            wen = Signal(last - first + 1, name=f"xwen{k}")
            m.d.sync += wen.eq(enables[first:last + 1])
            m.submodules[f"xmem{k}"] = mem = memory.Memory(shape=hi - lo, depth=words, init=[])
            write = mem.write_port(granularity=lanes * ib if whole else hi - lo)
            read = mem.read_port()
            m.d.comb += [write.en.eq(wen), write.addr.eq(waddr),
                         write.data.eq(Cat(*[beat] * per_word)[lo:hi]),
                         read.addr.eq(raddr)]
            slices.append(read.data)
        return Cat(*slices)

    def _skid(self, m: Module, group: Value, q_valid: Value, q_valid_next: Value,
              q_end: Value, groups: int, nf: int) -> Signal:
        """SF ≥ 2: groups shift straight into the output register (the vector is held
        once), or with ``group_output`` leave as beats; one that finds the register full
        and not being taken (the next engine not ready) waits in a skid buffer of
        ``groups`` entries, and the ones behind it queue there too. Returns the signal
        that a group enters the output register (is handed on)."""
        gb = group.shape().width
        skid = [Signal(gb + 1, name=f"skid{k}", reset_less=True) for k in range(groups)]
        count = Signal(range(groups + 1))
        count_n = Signal.like(count, name="count_next")
        arriving = Cat(group, q_end)
        # the next engine's s.ready is ~(a whole vector waits) | (it is loaded)
        taken = self.m.ready if self.group_output else ~self.m.valid | self.m.ready

        def moves(count, q_valid, taken=taken):
            """(held, enter, pop, push) from ``count``, ``q_valid`` and ``taken`` (or
            copies)."""
            held = count != 0
            enter = (held | q_valid) & taken
            return held, enter, enter & held, q_valid & ~(enter & ~held)

        held, enter, pop, push = moves(count, q_valid)
        head = Mux(held, skid[0], arriving)
        if self.group_output:
            m.d.comb += [self.m.valid.eq(held | q_valid), self.m.payload.eq(head[:gb])]
        # each part of each slot (perf.skid_parts) decides from its own copies of the count
        # and of q_valid: from one register, the count reached every slot's bits (6.8 ns of
        # routing at 500,000/s), and a slot's one choice its 121 bits (4.8 ns) (and, handing
        # groups on, of the next engine's ready: see ``m_ready_copies``)
        parts = skid_parts(gb + 1)
        copies = groups * len(parts)
        counts = register_copies(m, count_n, copies, "count")
        slot_arrivals = register_copies(m, q_valid_next, copies, "skid_qvalid")
        slot_taken = ([self.m_ready_copies[j % self.ready_copies] for j in range(copies)]
                      if self.group_output and self.ready_copies else [taken] * copies)
        for j, (count_c, arrival, taken_c) in enumerate(zip(counts, slot_arrivals, slot_taken,
                                                            strict=True)):
            k, (lo, hi) = j // len(parts), parts[j % len(parts)]
            _, _, pop_c, push_c = moves(count_c, arrival, taken_c)
            # (count_c - pop_c == k without the subtraction: an adder's carry chain made
            # the choice of a slot's every bit two signals, two LUTs a bit instead of one)
            with m.If(push_c & Mux(pop_c, count_c == k + 1, count_c == k)):
                m.d.sync += skid[k][lo:hi].eq(arriving[lo:hi])
            with m.Elif(pop_c):
                m.d.sync += skid[k][lo:hi].eq(skid[k + 1][lo:hi] if k + 1 < groups else 0)
        m.d.comb += count_n.eq(count - pop + push)
        m.d.sync += count.eq(count_n)
        if self.group_output:
            return enter
        vector = wide_signal(nf * gb, "vector")
        m.d.comb += self.m.payload.eq(vector[:self.n_out * self.widths.out_bits])
        # the output register shifts in the entering group part by part, each part under
        # its own copy of ``enter`` made from copies of the registers it depends on
        parts = enable_parts(len(vector))
        helds = register_copies(m, count_n != 0, len(parts), "held")
        arrivals = register_copies(m, q_valid_next, len(parts), "qvalid")
        fulls = output_valid_copies(m, self.m, enter & head[gb], len(parts))
        shifted = Cat(vector[gb:], head[:gb])
        readies = ([self.m_ready_copies[min(k, self.ready_copies - 1)]
                    for k in range(len(parts))] if self.ready_copies
                   else [self.m.ready] * len(parts))
        for (lo, hi), held_c, arrival, full, ready in zip(parts, helds, arrivals, fulls,
                                                          readies, strict=True):
            with m.If((held_c | arrival) & (~full | ready)):
                m.d.sync += vector[lo:hi].eq(shifted[lo:hi])
        return enter
