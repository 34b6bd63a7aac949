"""Co-simulation of many images, sharded over parallel processes.

:func:`run_sharded` splits the images into ``jobs`` contiguous shards and runs
:func:`bchw.cosim.cosimulate` on each in its own process, then adds the shards
up into one summary shaped like :func:`bchw.cosim.runner.run`'s, image indices
global (the first mismatch of image 7 of a shard starting at 5000 is image 5007).

Builds: the simulator model is built once, in this process, before the shards
start; every shard then finds it in ``build_dir`` (the runner caches builds by
the hash of the Verilog) and only reads it. Each shard runs in a run directory
of its own (``build_dir/runs/...``, made by the runner) that holds its job, its
record, its log and its own copy of the hex images, which is all a simulation
writes. So shards never trample each other and nothing is compiled twice;
copying the build per shard would cost disk and time and isolate nothing more.
(Built in the shards instead, a cold cache would compile the same model
``jobs`` times at once.)

Every shard runs every phase, the mid-stream reset included (it costs 4 images,
well under a second): the reset check is not skipped.

Shard ``k`` (from 0) uses seed ``seed + k`` for its gaps and back-pressure, so
with ``jobs=1`` the run is exactly ``cosimulate(..., seed=seed)``, and any one
shard is reproduced by ``cosimulate(bundle, rtl_dir, images[start:stop], ...,
seed=seed + k)`` with the ``start``, ``stop`` and ``seed`` of its summary.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from bchw.errors import BchwError

#: Fields of a shard's summary that are kept per shard in :func:`run_sharded`'s result.
SHARD_FIELDS = ("images", "mismatches", "first_mismatch", "latency_cycles_measured",
                "interval_cycles_measured", "cycles_match", "stress_cycles_match",
                "interval_match", "first_cycle_mismatch", "reset_ok", "deadlock",
                "tlast_missing", "sim_cycles", "stress_cycles", "accuracy", "wall_s", "run_dir")


def shard_bounds(n: int, jobs: int) -> list[tuple[int, int]]:
    """``jobs`` contiguous ``(start, stop)`` ranges covering ``range(n)``, sizes differing by ≤ 1.

    Never more shards than images: ``min(jobs, n)`` ranges, none empty.
    """
    if n < 1:
        raise BchwError(f"needs at least one image, got {n}", field="images")
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise BchwError(f"must be a positive integer, got {jobs!r}", field="jobs")
    jobs = min(int(jobs), n)
    size, extra = divmod(n, jobs)
    bounds, start = [], 0
    for k in range(jobs):
        stop = start + size + (k < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def run_sharded(bundle, rtl_dir, images, labels, simulator: str, jobs: int, *,
                build_dir: str | os.PathLike | None = None, seed: int = 0,
                p_gap: float = 0.3, p_bp: float = 0.3,
                progress: Callable[[str], None] | None = None) -> dict:
    """Co-simulate ``images`` in ``jobs`` parallel processes; one summary for all of them.

    Arguments are :func:`bchw.cosim.cosimulate`'s, plus ``jobs`` (processes;
    more than there are images gives one image per shard) and ``progress``,
    called in this process with one line as each shard finishes.

    Returns a dict: ``images``, ``simulator``, ``jobs`` (shards actually run);
    ``mismatches`` (sum over shards) and ``first_mismatch`` (global ``image``
    index, plus its ``shard``); ``latency_cycles_measured`` and
    ``interval_cycles_measured`` (every shard measures both: the first shard's
    value that differs from the model, else the first shard's) with their
    ``_model``; ``cycles_match``, ``stress_cycles_match``, ``interval_match``,
    ``reset_ok`` (all shards), ``deadlock`` (any), ``first_cycle_mismatch``
    (global index), ``tlast_missing``; ``accuracy`` (the RTL's classes of the
    back-to-back phase against ``labels``; None without labels); ``classes``
    (those classes, -1 where no result came) and ``golden_classes``;
    ``sim_cycles`` and ``stress_cycles`` (sums); ``build_s`` (building or finding the simulator
    model), ``wall_s`` (the whole call), ``images_per_s`` and
    ``sim_cycles_per_s`` (simulated cycles of all shards per second of
    ``wall_s``); ``build_dir``; and ``shards``, one summary per shard (its
    ``start``, ``stop``, ``seed``, ``run_dir``, ``wall_s``, ``models_s`` (golden
    and cycle model), ``phase_s`` and ``phase_cpu_s`` per phase of the bench,
    ``worker_cpu_s`` and ``sim_cpu_s`` (CPU time of the shard's process and of its
    simulator), ...).
    Raises :class:`BchwError` as :func:`bchw.cosim.runner.run` does, naming the
    shard that failed.
    """
    from bchw.cosim import runner

    started = time.monotonic()
    images = np.asarray(images)
    if images.ndim != 2:
        raise BchwError(f"has shape {images.shape}, expected [N, n_in]", field="images")
    n = images.shape[0]
    if labels is not None:
        labels = np.asarray(labels).ravel()
        if labels.shape[0] != n:
            raise BchwError(f"has {labels.shape[0]} entries for {n} images", field="labels")
    bounds = shard_bounds(n, jobs)
    build_dir = Path(build_dir if build_dir is not None else "sim_build").resolve()
    rtl_dir = Path(rtl_dir).resolve()
    runner.build(rtl_dir, simulator, build_dir)
    build_s = time.monotonic() - started

    tasks = [dict(shard=k, start=a, stop=b, bundle=bundle, rtl_dir=rtl_dir,
                  images=images[a:b], labels=None if labels is None else labels[a:b],
                  simulator=simulator, seed=int(seed) + k, build_dir=build_dir,
                  p_gap=p_gap, p_bp=p_bp)
             for k, (a, b) in enumerate(bounds)]
    results: list[dict | None] = [None] * len(tasks)

    def finished(result: dict) -> None:
        results[result["shard"]] = result
        if progress is not None:
            progress(_progress_line(result, len(tasks), n))

    if len(tasks) == 1:
        finished(_run_shard(tasks[0]))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(tasks), mp_context=context) as pool:
            futures = {pool.submit(_run_shard, task): task for task in tasks}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    error = future.exception()
                    if error is not None:
                        for other in pending:
                            other.cancel()
                        task = futures[future]
                        where = (f"shard {task['shard']} "
                                 f"(images {task['start']}..{task['stop'] - 1})")
                        if isinstance(error, BchwError):
                            raise BchwError(f"{where}: {error.message}", path=error.path,
                                            field=error.field) from None
                        raise BchwError(f"{where}: {type(error).__name__}: {error}") from error
                    finished(future.result())
    summary = aggregate(results, labels)
    wall_s = time.monotonic() - started
    summary.update(simulator=simulator, build_s=build_s, wall_s=wall_s,
                   images_per_s=n / wall_s, sim_cycles_per_s=summary["sim_cycles"] / wall_s,
                   build_dir=str(build_dir))
    return summary


def _run_shard(task: dict) -> dict:
    """One shard: :func:`bchw.cosim.cosimulate` on its images (in a worker process)."""
    from bchw.cosim import cosimulate

    started, cpu0 = time.monotonic(), time.process_time()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = cosimulate(task["bundle"], task["rtl_dir"], task["images"], task["labels"],
                   task["simulator"], seed=task["seed"], build_dir=str(task["build_dir"]),
                   p_gap=task["p_gap"], p_bp=task["p_bp"])
    record = json.loads(Path(r["result_file"]).read_text())
    phases = record["phases"]
    source = next((phases[p]["outputs"] for p in ("timing", "stress") if p in phases), [])
    classes = [out["class"] if out["class"] is not None else -1 for out in source]
    wall_s = time.monotonic() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    shard = {k: r.get(k) for k in SHARD_FIELDS}
    shard.update(
        shard=task["shard"], start=task["start"], stop=task["stop"], seed=task["seed"],
        latency_cycles_model=r["latency_cycles_model"],
        interval_cycles_model=r["interval_cycles_model"],
        wall_s=wall_s, sim_s=r["wall_s"], models_s=wall_s - r["wall_s"],
        phase_s={p: v.get("wall_s") for p, v in phases.items()},
        phase_cpu_s={p: v.get("cpu_s") for p, v in phases.items()},
        # CPU time, which other load on the machine does not inflate: this process
        # (golden and cycle models, runner) and the simulator it ran (cocotb included)
        worker_cpu_s=time.process_time() - cpu0,
        sim_cpu_s=(children.ru_utime + children.ru_stime
                   - children0.ru_utime - children0.ru_stime),
        classes=np.asarray(classes, dtype=np.int64),
        golden_classes=np.asarray(r["golden_classes"], dtype=np.int64))
    return shard


def _progress_line(shard: dict, shards: int, n: int) -> str:
    verdict = ("cycles match" if shard["cycles_match"] and shard["stress_cycles_match"]
               else "CYCLES DIFFER")
    rate = shard["images"] / shard["wall_s"] if shard["wall_s"] else 0.0
    return (f"shard {shard['shard'] + 1}/{shards}: images {shard['start']}..{shard['stop'] - 1} "
            f"of {n}: {shard['mismatches']} mismatches, {verdict}, "
            f"{shard['wall_s']:.1f} s ({rate:.1f} images/s)")


def _globalise(entry: dict | None, shard: dict) -> dict | None:
    """A shard's ``first_mismatch`` or ``first_cycle_mismatch`` with the global image index."""
    if entry is None:
        return None
    return {**entry, "image": int(entry["image"]) + shard["start"], "shard": shard["shard"]}


def _first_measured(shards: Sequence[dict], measured: str, model: str):
    """The first shard's measurement that differs from the model, else the first shard's."""
    values = [(s[measured], s[model]) for s in shards if s[measured] is not None]
    wrong = [value for value, want in values if value != want]
    if wrong:
        return wrong[0]
    return values[0][0] if values else None


def _all(values: Sequence) -> bool | None:
    """True if all are True; None if any is None (a phase not run), else False."""
    if any(v is None for v in values):
        return None
    return all(values)


def aggregate(shards: Sequence[dict], labels=None) -> dict:
    """One summary from per-shard summaries (as :func:`_run_shard` returns them), in any order.

    The shards must cover ``0..N`` contiguously; ``labels`` has all ``N`` labels. Image
    indices in a shard's summary are the shard's own (from 0); in the result they are
    global, in the per-shard summaries too.
    """
    shards = sorted(shards, key=lambda s: s["start"])
    expected_start = 0
    for s in shards:
        if s["start"] != expected_start or s["stop"] - s["start"] != s["images"]:
            raise ValueError(f"shards do not tile the images: shard {s['shard']} covers "
                             f"{s['start']}..{s['stop']} after {expected_start}")
        expected_start = s["stop"]
    first = shards[0]
    latency_model = first["latency_cycles_model"]
    interval_model = first["interval_cycles_model"]
    cycles_match = _all([s["cycles_match"] for s in shards])
    stress_match = _all([s["stress_cycles_match"] for s in shards])
    interval_flags = [s["interval_match"] for s in shards if s["interval_match"] is not None]
    summary = {
        "images": sum(s["images"] for s in shards),
        "jobs": len(shards),
        "mismatches": sum(s["mismatches"] for s in shards),
        "first_mismatch": next((_globalise(s["first_mismatch"], s) for s in shards
                                if s["first_mismatch"] is not None), None),
        "latency_cycles_measured": _first_measured(shards, "latency_cycles_measured",
                                                   "latency_cycles_model"),
        "latency_cycles_model": latency_model,
        "interval_cycles_measured": _first_measured(shards, "interval_cycles_measured",
                                                    "interval_cycles_model"),
        "interval_cycles_model": interval_model,
        "cycles_match": cycles_match,
        "stress_cycles_match": stress_match,
        "interval_match": all(interval_flags) if interval_flags else None,
        "first_cycle_mismatch": next((_globalise(s["first_cycle_mismatch"], s) for s in shards
                                      if s["first_cycle_mismatch"] is not None), None),
        "reset_ok": _all([s["reset_ok"] for s in shards]),
        "deadlock": any(bool(s["deadlock"]) for s in shards),
        "tlast_missing": sum(s["tlast_missing"] or 0 for s in shards),
        "sim_cycles": sum(s["sim_cycles"] for s in shards),
        "stress_cycles": (None if any(s.get("stress_cycles") is None for s in shards)
                          else sum(s["stress_cycles"] for s in shards)),
        "classes": np.concatenate([s["classes"] for s in shards]),
        "golden_classes": np.concatenate([s["golden_classes"] for s in shards]),
        "accuracy": None,
    }
    if labels is not None:
        labels = np.asarray(labels).ravel()
        # As the runner counts it: over the results that came, shard by shard.
        correct = counted = 0
        for s in shards:
            got = s["classes"]
            correct += int(np.sum(got == labels[s["start"]:s["start"] + len(got)]))
            counted += len(got)
        summary["accuracy"] = correct / counted if counted else None
    summary["shards"] = [{**{k: v for k, v in s.items() if k not in ("classes", "golden_classes")},
                          "first_mismatch": _globalise(s["first_mismatch"], s),
                          "first_cycle_mismatch": _globalise(s["first_cycle_mismatch"], s)}
                         for s in shards]
    return summary
