"""cocotb bench for ``bchw_top``: streams images in, reads every result out.

The bench takes its job from the ``.npz`` named by ``$BCHW_COSIM_JOB`` (written
by :func:`write_job`) and writes what it saw, as JSON, to ``$BCHW_COSIM_RESULT``.
It judges nothing: :mod:`bchw.cosim.runner` compares the record with the golden
and cycle models.

Cycles: the clock's rising edges are numbered from simulation time 0
(``edge = time // period``). A beat is accepted at edge ``e`` when ``tvalid`` and
``tready`` were both 1 in the ReadOnly phase of the clock period that ``e``
closes; the driver and the monitor sample there, then await ``e``. Cycles in the
record are edge numbers relative to the edge that accepted the first beat of
the phase's first image (that edge is cycle 0).

Phases, each after a synchronous reset:

- ``timing``: one image alone into an empty pipeline (its latency), then a
  reset, then all images back to back, no input gaps, ``m_axis_tready`` held 1.
- ``stress``: all images with seeded random input gaps (``p_gap``) and output
  back-pressure (``p_bp``).
- ``reset``: stream with gaps and back-pressure, assert ``rst`` for two cycles
  in the middle of an image, then stream fresh images and read their results.

Waiting is event-driven (on ``tready``/``tvalid`` edges, not every clock), so a
phase costs a few triggers per beat, not per cycle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, Event, First, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_steps

from bchw.cosim.beats import check_io, output_width, pack_image, unpack_fields, unpack_output
from bchw.errors import BchwError, atomic_write_bytes

JOB_ENV = "BCHW_COSIM_JOB"
RESULT_ENV = "BCHW_COSIM_RESULT"
PHASES = ("timing", "stress", "reset")
CLOCK_PERIOD_NS = 10
RESET_CYCLES = 4
MID_STREAM_RESET_CYCLES = 2


@dataclass
class Job:
    """What one simulation run does; see :func:`write_job`."""

    images: np.ndarray
    io: dict[str, int]
    seed: int
    p_gap: float
    p_bp: float
    phases: tuple[str, ...]
    timeout_cycles: int
    drain_cycles: int
    reset_images: int
    taps: tuple[dict, ...] = ()   # per layer {"n", "bits", "signed"}: a debug build's outputs


def write_job(path: str | os.PathLike, job: Job) -> None:
    """Store ``job`` as an ``.npz``: the ``images`` array and a JSON ``config`` string."""
    config = {
        "io": job.io, "seed": job.seed, "p_gap": job.p_gap, "p_bp": job.p_bp,
        "phases": list(job.phases), "timeout_cycles": job.timeout_cycles,
        "drain_cycles": job.drain_cycles, "reset_images": job.reset_images,
        "taps": list(job.taps),
    }
    with open(path, "wb") as f:
        np.savez(f, images=np.ascontiguousarray(job.images, dtype=np.uint8),
                 config=np.array(json.dumps(config)))


def read_job(path: str | os.PathLike) -> Job:
    with np.load(path, allow_pickle=False) as npz:
        images = npz["images"]
        config = json.loads(str(npz["config"]))
    return Job(images=images, io=check_io(config["io"]), seed=int(config["seed"]),
               p_gap=float(config["p_gap"]), p_bp=float(config["p_bp"]),
               phases=tuple(config["phases"]), timeout_cycles=int(config["timeout_cycles"]),
               drain_cycles=int(config["drain_cycles"]),
               reset_images=int(config["reset_images"]),
               taps=tuple(config.get("taps", ())))


class TB:
    """Clock, reset, an input driver and an output monitor for ``bchw_top``."""

    def __init__(self, dut, io: dict[str, int], timeout_cycles: int):
        self.dut = dut
        self.io = io
        self.timeout_cycles = timeout_cycles
        for port, want in (("s_axis_tdata", 8 * io["in_lanes"]),
                           ("m_axis_tdata", output_width(io))):
            got = len(getattr(dut, port))
            if got != want:
                raise BchwError(f"bchw_top's {port} is {got} bits wide, but the io dict "
                                f"{io} needs {want}", field=port)
        self.period = get_sim_steps(CLOCK_PERIOD_NS, "ns")
        dut.rst.value = 1
        dut.s_axis_tvalid.value = 0
        dut.s_axis_tlast.value = 0
        dut.s_axis_tdata.value = 0
        dut.m_axis_tready.value = 1
        Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()

    def edge(self) -> int:
        """Number of the latest rising edge (call right after awaiting it)."""
        return get_sim_time("step") // self.period

    async def reset(self, cycles: int = RESET_CYCLES, *, align: bool = True) -> None:
        """Hold ``rst`` for ``cycles`` rising edges with both streams idle.

        ``align=False`` asserts it at once: the caller is just past an edge.
        """
        dut = self.dut
        if align:
            await RisingEdge(dut.clk)
        dut.rst.value = 1
        dut.s_axis_tvalid.value = 0
        dut.m_axis_tready.value = 1
        await ClockCycles(dut.clk, cycles)
        dut.rst.value = 0

    async def send(self, images: list[list[int]], first_beat_edges: list[int],
                   gaps: np.ndarray | None = None, beat_accepted: Event | None = None,
                   at_beat: tuple[int, int] | None = None) -> None:
        """Drive ``images`` (lists of beat words) into ``s_axis``.

        Appends to ``first_beat_edges`` the edge that accepted each image's first
        beat. ``gaps[b]`` idle cycles precede beat ``b``. If ``at_beat`` is
        ``(image, beat)``, ``beat_accepted`` is set right after that beat is accepted.
        """
        dut = self.dut
        clk, tready = dut.clk, dut.s_axis_tready
        serial = 0
        for i, beats in enumerate(images):
            last = len(beats) - 1
            for j, word in enumerate(beats):
                if gaps is not None and gaps[serial]:
                    dut.s_axis_tvalid.value = 0
                    await ClockCycles(clk, int(gaps[serial]))
                serial += 1
                dut.s_axis_tdata.value = word
                dut.s_axis_tlast.value = int(j == last)
                dut.s_axis_tvalid.value = 1
                await ReadOnly()
                while tready.value != 1:
                    await RisingEdge(tready)
                    await ReadOnly()
                await RisingEdge(clk)
                if j == 0:
                    first_beat_edges.append(self.edge())
                if at_beat == (i, j):
                    beat_accepted.set()
        dut.s_axis_tvalid.value = 0
        dut.s_axis_tlast.value = 0

    async def receive(self, count: int, outputs: list[dict],
                      draw: Callable[[], bool] | None = None) -> None:
        """Read ``count`` results from ``m_axis`` into ``outputs``.

        With ``draw``, ``m_axis_tready`` for the next clock is ``draw()`` after
        every clock in which a result waited (see :func:`backpressure`).
        """
        dut = self.dut
        clk, tvalid = dut.clk, dut.m_axis_tvalid
        ready = 1
        dut.m_axis_tready.value = 1
        while len(outputs) < count:
            await ReadOnly()
            if tvalid.value != 1:
                await RisingEdge(tvalid)
                continue
            if ready:
                word, tlast = dut.m_axis_tdata.value, dut.m_axis_tlast.value
                await RisingEdge(clk)
                outputs.append(self.decode(word, tlast))
            else:
                await RisingEdge(clk)
            if draw is not None:
                ready = int(draw())
                dut.m_axis_tready.value = ready
        dut.m_axis_tready.value = 1

    async def collect(self, count: int, outputs: list[dict],
                      draw: Callable[[], bool] | None = None) -> bool:
        """:meth:`receive` under a watchdog; True (a deadlock) if a whole
        ``timeout_cycles`` window passes without a result.

        One watchdog timer at a time: a timer per awaited result would pile up
        cancelled timers in the simulator and slow it down more than linearly.
        """
        monitor = cocotb.start_soon(self.receive(count, outputs, draw))
        seen = -1
        while not monitor.done():
            timer = Timer(self.timeout_cycles * self.period, unit="step")
            if await First(monitor.complete, timer) is timer:
                if len(outputs) == seen:
                    monitor.cancel()
                    return True
                seen = len(outputs)
        return False

    async def tap(self, index: int, spec: dict, vectors: list[list[int] | None]) -> None:
        """Record every vector engine ``index`` hands on (debug builds: ``dbg_l{index}_*``)."""
        valid = getattr(self.dut, f"dbg_l{index}_valid")
        data = getattr(self.dut, f"dbg_l{index}_data")
        n, bits, signed = spec["n"], spec["bits"], spec["signed"]
        while True:
            await ReadOnly()
            if valid.value != 1:
                await RisingEdge(valid)
                continue
            word = data.value
            await RisingEdge(self.dut.clk)
            if not word.is_resolvable:
                vectors.append(None)
                continue
            vectors.append(unpack_fields(word.to_unsigned(), n, bits, signed))

    def decode(self, word, tlast) -> dict:
        out = {"edge": self.edge(), "tlast": int(tlast == 1)}
        if not word.is_resolvable:
            return out | {"class": None, "scores": None, "raw": str(word)}
        cls, scores = unpack_output(word.to_unsigned(), self.io)
        return out | {"class": cls, "scores": scores}


def _relative(outputs: list[dict], edge0: int) -> list[dict]:
    for out in outputs:
        out["cycle"] = out.pop("edge") - edge0
    return outputs


def _gaps(rng: np.random.Generator, p_gap: float, beats: int) -> np.ndarray:
    # Idle cycles before a beat: each cycle is idle with probability p_gap.
    return rng.geometric(1.0 - p_gap, size=beats) - 1


def backpressure(rng: np.random.Generator, p_bp: float) -> Callable[[], bool]:
    """``m_axis_tready`` draws: low with probability ``p_bp``."""
    return lambda: bool(rng.random() >= p_bp)


def stress_stimulus(seed: int, p_gap: float, p_bp: float, n_beats: int
                    ) -> tuple[np.ndarray, Callable[[], bool]]:
    """The stress phase's input gaps and output-ready draws.

    :meth:`bchw.perf.CycleModel.stream` takes the same two (``in_gaps``,
    ``out_draw``), so the model predicts every cycle of the stress phase too.
    """
    rng_in, rng_out = (np.random.default_rng([seed, k]) for k in (0, 1))
    return _gaps(rng_in, p_gap, n_beats), backpressure(rng_out, p_bp)


async def phase_timing(tb: TB, job: Job, beats: list[list[int]]) -> dict:
    await tb.reset()
    first, outs = [], []
    driver = cocotb.start_soon(tb.send(beats[:1], first))
    deadlock = await tb.collect(1, outs)
    driver.cancel()
    isolated = {"deadlock": deadlock}
    if not deadlock:
        isolated |= {"latency": outs[0]["edge"] - first[0], **_relative(outs, first[0])[0]}

    await tb.reset()
    first, outs = [], []
    taps = [[] for _ in job.taps]
    monitors = [cocotb.start_soon(tb.tap(i, spec, taps[i])) for i, spec in enumerate(job.taps)]
    driver = cocotb.start_soon(tb.send(beats, first))
    deadlock = await tb.collect(len(beats), outs)
    driver.cancel()
    for monitor in monitors:
        monitor.cancel()
    edge0 = first[0] if first else tb.edge()
    return {"isolated": isolated, "deadlock": deadlock or isolated["deadlock"],
            "first_beat_cycles": [e - edge0 for e in first], "outputs": _relative(outs, edge0),
            "layer_outputs": taps}


async def phase_stress(tb: TB, job: Job, beats: list[list[int]]) -> dict:
    await tb.reset()
    first, outs = [], []
    gaps, draw = stress_stimulus(job.seed, job.p_gap, job.p_bp, sum(map(len, beats)))
    driver = cocotb.start_soon(tb.send(beats, first, gaps))
    deadlock = await tb.collect(len(beats), outs, draw)
    driver.cancel()
    edge0 = first[0] if first else tb.edge()
    return {"deadlock": deadlock, "first_beat_cycles": [e - edge0 for e in first],
            "outputs": _relative(outs, edge0)}


async def phase_reset(tb: TB, job: Job, beats: list[list[int]]) -> dict:
    dut = tb.dut
    await tb.reset()
    rng_in, rng_out = (np.random.default_rng([job.seed, k]) for k in (2, 3))
    # Interrupt image 2 (the last, with fewer) halfway through its beats, so
    # results are in flight and an image is half-read.
    interrupted = min(2, len(beats) - 1)
    at_beat = (interrupted, (len(beats[interrupted]) - 1) // 2)
    accepted = Event()
    first, before = [], []
    driver = cocotb.start_soon(tb.send(beats, first, _gaps(rng_in, job.p_gap, sum(map(len, beats))),
                                       accepted, at_beat))
    monitor = cocotb.start_soon(tb.receive(len(beats), before, backpressure(rng_out, job.p_bp)))
    timeout = Timer(tb.timeout_cycles * tb.period, unit="step")
    if await First(accepted.wait(), timeout) is timeout:
        driver.cancel()
        monitor.cancel()
        return {"deadlock": True, "interrupted_image": interrupted,
                "interrupted_beat": at_beat[1],
                "before_reset": _relative(before, first[0] if first else tb.edge()),
                "tvalid_after_reset": None, "fresh_images": 0, "outputs": [],
                "extra_outputs": []}
    driver.cancel()
    monitor.cancel()
    edge0 = first[0]
    await tb.reset(MID_STREAM_RESET_CYCLES, align=False)
    await ReadOnly()
    tvalid_after_reset = int(dut.m_axis_tvalid.value == 1)

    fresh = beats[:job.reset_images]
    first, outs, extra = [], [], []
    await RisingEdge(dut.clk)
    driver = cocotb.start_soon(tb.send(fresh, first, _gaps(rng_in, job.p_gap,
                                                           sum(map(len, fresh)))))
    deadlock = await tb.collect(len(fresh), outs, backpressure(rng_out, job.p_bp))
    if not deadlock:
        # Nothing stale may follow the fresh results.
        monitor = cocotb.start_soon(tb.receive(1, extra))
        await Timer(job.drain_cycles * tb.period, unit="step")
        monitor.cancel()
    driver.cancel()
    fresh_edge0 = first[0] if first else tb.edge()
    return {"deadlock": deadlock, "interrupted_image": interrupted,
            "interrupted_beat": at_beat[1], "before_reset": _relative(before, edge0),
            "tvalid_after_reset": tvalid_after_reset, "fresh_images": len(fresh),
            "outputs": _relative(outs, fresh_edge0), "extra_outputs": _relative(extra, fresh_edge0)}


PHASE_RUNNERS = {"timing": phase_timing, "stress": phase_stress, "reset": phase_reset}


@cocotb.test()
async def run_job(dut) -> None:
    """Run the phases of ``$BCHW_COSIM_JOB`` and record them in ``$BCHW_COSIM_RESULT``."""
    result: dict = {"phases": {}}
    tb = None
    try:
        job = read_job(os.environ[JOB_ENV])
        tb = TB(dut, job.io, job.timeout_cycles)
        beats = [pack_image(image, job.io["in_lanes"]) for image in job.images]
        for phase in job.phases:
            started, cpu0 = time.perf_counter(), time.process_time()
            result["phases"][phase] = await PHASE_RUNNERS[phase](tb, job, beats)
            result["phases"][phase] |= {"end_edge": tb.edge(),
                                        "wall_s": time.perf_counter() - started,
                                        "cpu_s": time.process_time() - cpu0}
    except BchwError as e:
        result["error"] = str(e)
    except Exception:  # noqa: BLE001 -- reported to the runner with its traceback
        result["error"] = traceback.format_exc()
    result["sim_cycles"] = tb.edge() if tb is not None else 0
    atomic_write_bytes(Path(os.environ[RESULT_ENV]), json.dumps(result).encode())
