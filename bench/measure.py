"""Timing statistics, process-tree memory sampling and the machine's description."""
import os
import platform
import statistics
import subprocess
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import psutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """Median and spread (min, max) of repeated measurements, with the raw values."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": list(values)}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) without numpy."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its descendants (Beam workers, if any)."""
    total = 0
    for member in [process] + process.children(recursive=True):
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


class RssSampler:
    """Samples a process tree's RSS in a thread: (wall-clock time, bytes) pairs.

    Wall-clock (time.time) so the samples can be matched with ML Metadata's timestamps.
    """

    def __init__(self, pid: int, interval_seconds: float = 0.1):
        self._process = psutil.Process(pid)
        self._interval = interval_seconds
        self._stop = threading.Event()
        self.samples: List[Tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), tree_rss(self._process)))
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> Optional[int]:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside) if inside else None

    def at(self, moment: float) -> Optional[int]:
        """The first sample taken at or after `moment`."""
        return next((rss for t, rss in self.samples if t >= moment), None)

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module_name: str) -> str:
    try:
        from importlib import metadata
        return metadata.version(module_name)
    except Exception:  # noqa: BLE001  a missing package is reported, not fatal
        return "not installed"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> Dict[str, object]:
    """What the numbers depend on: CPU, cores, memory, load, library versions, commit."""
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in (
            "tfx", "tensorflow", "tf-keras", "tensorflow-transform", "apache-beam",
            "onnxruntime", "numpy", "pillow", "grpcio")},
        "git_commit": _git_commit(),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
