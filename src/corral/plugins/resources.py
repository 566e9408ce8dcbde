"""How much memory and GPU memory is free, and whether a plugin fits.

**Sources** (``ResourceMonitor``; each one injectable, for tests and for hosts that budget
on their own): free memory is ``psutil.virtual_memory().available`` when psutil is
importable, else ``MemAvailable`` of ``/proc/meminfo``; GPUs come from NVML (``pynvml``)
when importable, else ``nvidia-smi``, else there are none. A process's own use is its RSS
(with its children's) and, where NVML or nvidia-smi report it, its GPU memory.

**Accounting.** The free figures already exclude what loaded plugins *use*. A plugin still
loading, or still growing, will take up to what it *declared*: each loaded plugin holds
``max(0, declared - used)`` on top, so a plugin that declared 2 GiB and uses 0.5 GiB so
far keeps 1.5 GiB out of what the next one may have. (RSS alone would let two plugins
that load at once both pass the check.)

GPUs are not assigned: a plugin sees every GPU, ``gpus`` is checked against how many
there are, and ``gpu_memory`` against the free memory of all GPUs together (exact on a
one-GPU machine, optimistic on several).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from .errors import InsufficientResources
from .manifest import Resources, format_size


@dataclass(frozen=True)
class Gpu:
    """One GPU: ``total`` and ``free`` memory in bytes."""

    index: int
    name: str
    total: int
    free: int


@dataclass(frozen=True)
class Usage:
    """What one process uses now, in bytes."""

    memory: int = 0
    gpu_memory: int = 0


@dataclass
class Holding:
    """A loaded (or loading) plugin, as accounting sees it."""

    name: str
    declared: Resources
    pid: int | None


class ResourceMonitor:
    """Reads what is free. Each source may be replaced by a function:
    ``memory_available() -> int | None`` (bytes; None: unknown, not checked),
    ``gpus() -> list[Gpu]`` and ``usage(pid) -> Usage``."""

    def __init__(self, *, memory_available: Callable[[], int | None] | None = None,
                 gpus: Callable[[], list[Gpu]] | None = None,
                 usage: Callable[[int], Usage] | None = None):
        self.memory_available = memory_available or system_memory_available
        self.gpus = gpus or system_gpus
        self.usage = usage or process_usage

    def fit(self, name: str, need: Resources, holding: Sequence[Holding],
            evictable: Iterable[Holding] = ()) -> list[Holding]:
        """Check that plugin ``name``, needing ``need``, fits next to ``holding``. If it
        does not, take plugins from ``evictable`` (least recently used first) until it
        would, and return them (the caller unloads them); raise InsufficientResources,
        saying what is needed, what is free and what loaded plugins hold, when even that
        is not enough. Returns [] when it fits as things are."""
        if not (need.memory or need.gpus or need.gpu_memory):
            return []
        usage = {h.pid: self.usage(h.pid) if h.pid else Usage() for h in holding}
        gpus = self.gpus() if (need.gpus or need.gpu_memory) else []
        if (need.gpus or need.gpu_memory) and not gpus:
            raise InsufficientResources(
                f"cannot load {name!r}: it needs {_gpu_need(need)}, and no GPU was found "
                "(no NVML, no nvidia-smi, or no device)", _needed(need), {"gpus": 0})
        if need.gpus > len(gpus):
            raise InsufficientResources(
                f"cannot load {name!r}: it needs {need.gpus} GPU(s), this machine has "
                f"{len(gpus)}", _needed(need), {"gpus": len(gpus)})
        memory = self.memory_available() if need.memory else None
        gpu_free = sum(g.free for g in gpus)
        pending_mem = {h.name: max(0, h.declared.memory - usage[h.pid].memory)
                       for h in holding}
        pending_gpu = {h.name: max(0, h.declared.gpu_memory - usage[h.pid].gpu_memory)
                       for h in holding}

        def short() -> dict[str, int]:
            """Free amounts that fall short of the need (empty: it fits)."""
            out = {}
            if memory is not None and need.memory:
                free = memory - sum(pending_mem.values())
                if need.memory > free:
                    out["memory"] = free
            if need.gpu_memory:
                free = gpu_free - sum(pending_gpu.values())
                if need.gpu_memory > free:
                    out["gpu_memory"] = free
            return out

        missing = short()
        if not missing:
            return []
        victims: list[Holding] = []
        for h in evictable:
            victims.append(h)
            used = usage.get(h.pid, Usage())
            # Once it is gone, what it used is free again, and what it still had to take
            # is no longer pending.
            if memory is not None:
                memory += used.memory
            gpu_free += used.gpu_memory
            pending_mem.pop(h.name, None)
            pending_gpu.pop(h.name, None)
            if not short():
                return victims
        raise InsufficientResources(self._message(name, need, missing, holding, usage,
                                                  bool(victims)),
                                    _needed(need), missing)

    def _message(self, name: str, need: Resources, missing: dict[str, int],
                 holding: Sequence[Holding], usage: dict, tried_evicting: bool) -> str:
        parts = []
        for key, free in missing.items():
            what = "memory" if key == "memory" else "GPU memory"
            parts.append(f"it needs {format_size(getattr(need, key))} of {what}, "
                         f"{format_size(max(free, 0))} is free")
        held = [f"{h.name} holds {format_size(getattr(h.declared, key))} of {key} "
                f"(uses {format_size(getattr(usage[h.pid], key))})"
                for h in holding for key in missing if getattr(h.declared, key)]
        text = f"cannot load {name!r}: " + "; ".join(parts)
        text += (" (counting what loaded plugins declared: " + ", ".join(held) + ")") \
            if held else " (no loaded plugin holds any)"
        if tried_evicting:
            text += "; unloading every idle plugin would not make enough room"
        elif holding:
            text += "; unload a plugin, or load with evict='lru'"
        return text


def _gpu_need(need: Resources) -> str:
    parts = []
    if need.gpus:
        parts.append(f"{need.gpus} GPU(s)")
    if need.gpu_memory:
        parts.append(f"{format_size(need.gpu_memory)} of GPU memory")
    return " and ".join(parts)


def _needed(need: Resources) -> dict[str, int]:
    return {k: v for k, v in (("memory", need.memory), ("gpus", need.gpus),
                              ("gpu_memory", need.gpu_memory)) if v}


# -- system sources -------------------------------------------------------------------------


def system_memory_available() -> int | None:
    """Memory available to new processes, in bytes (None if this system does not say)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def system_gpus() -> list[Gpu]:
    """The GPUs, from NVML if pynvml imports, else nvidia-smi, else none."""
    try:
        import pynvml
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                out = []
                for i in range(pynvml.nvmlDeviceGetCount()):
                    handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                    name = pynvml.nvmlDeviceGetName(handle)
                    out.append(Gpu(i, name.decode() if isinstance(name, bytes) else name,
                                   int(mem.total), int(mem.free)))
                return out
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - no driver, no device: try nvidia-smi
            pass
    rows = _nvidia_smi("--query-gpu=index,name,memory.total,memory.free")
    out = []
    for row in rows:
        try:
            index, name, total, free = row
            out.append(Gpu(int(index), name, int(total) * 2**20, int(free) * 2**20))
        except ValueError:
            continue
    return out


def process_usage(pid: int) -> Usage:
    """RSS of ``pid`` and its children, and its GPU memory where the driver says."""
    memory = 0
    try:
        import psutil

        proc = psutil.Process(pid)
        memory = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                memory += child.memory_info().rss
            except psutil.Error:
                pass
    except ImportError:
        memory = _status_rss(pid)
    except Exception:  # noqa: BLE001 - gone: it uses nothing
        memory = 0
    return Usage(memory, _gpu_usage().get(pid, 0))


def _status_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _gpu_usage() -> dict[int, int]:
    """GPU memory per pid, where nvidia-smi reports it (empty without a GPU)."""
    out: dict[int, int] = {}
    for row in _nvidia_smi("--query-compute-apps=pid,used_memory"):
        try:
            out[int(row[0])] = out.get(int(row[0]), 0) + int(row[1]) * 2**20
        except (ValueError, IndexError):
            continue
    return out


def _nvidia_smi(query: str) -> list[list[str]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        proc = subprocess.run([exe, query, "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10,
                              env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    return [[cell.strip() for cell in line.split(",")]
            for line in proc.stdout.splitlines() if line.strip()]
