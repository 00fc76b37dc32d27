"""What machine a benchmark ran on: cores, CPU model, memory, GPU, library versions.

Benchmarks on shared machines are noisy, so every result file carries this
description (and the load average at the start) beside its figures.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("tensorflow", "keras", "numpy", "streamlit", "playwright")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The vector extensions the CPU reports that matter to TensorFlow's kernels."""
    from lib.hardware import cpu_flag_set

    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "fma")
    flags = cpu_flag_set()
    return [f for f in wanted if f in flags]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def memory_gib() -> float | None:
    """Total memory in GiB, from /proc/meminfo."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def gpus() -> list[str]:
    """GPU names from ``nvidia-smi`` (empty without an NVIDIA driver); no TensorFlow import."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def versions() -> dict[str, str]:
    """Installed versions of the packages the figures depend on."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (runnable processes; > cores means contention)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def waiting_seconds(stat: Path = Path("/proc/stat")) -> dict[str, float]:
    """Machine-wide CPU seconds spent idle waiting for disk, stolen by the host, and accounted.

    From /proc/stat (all cores): ``iowait`` (idle with disk reads or writes
    outstanding) and ``steal`` (the hypervisor ran something else), summed over the
    cores; ``accounted``: every field of the first line (user, system, idle, iowait,
    steal...) divided by the number of cores, i.e. the seconds the kernel's CPU
    accounting saw pass. It keeps pace with a wall clock; where it falls behind, time
    passed that no core accounted for, as when the whole virtual machine is paused.
    Empty where there is no /proc/stat.
    """
    try:
        lines = stat.read_text(encoding="utf-8").splitlines()
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return {}
    fields = lines[0].split() if lines else []
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return {}
    cores = sum(1 for line in lines[1:] if re.match(r"cpu\d+ ", line)) or 1
    # guest and guest_nice (fields 9 and 10) are already counted in user and nice
    total = sum(int(v) for v in fields[1:9])
    return {
        "iowait": int(fields[5]) / hz,
        "steal": int(fields[8]) / hz,
        "accounted": total / hz / cores,
    }


DAMON_ROOT = Path("/sys/kernel/mm/damon/admin/kdamonds")


def page_reclaim(root: Path = DAMON_ROOT) -> str | None:
    """The kernel's proactive reclaim, when it runs: DAMON paging out idle memory.

    With it, library code and data files not touched for the scheme's minimum age are
    dropped from memory and read back from disk at their next use (major page faults),
    which a benchmark sees as wall time without CPU time. None when DAMON is off or absent.
    """
    try:
        for kdamond in sorted(root.glob("[0-9]*")):
            if (kdamond / "state").read_text().strip() != "on":
                continue
            for ctx in sorted(kdamond.glob("contexts/[0-9]*")):
                aggr_us = int((ctx / "monitoring_attrs/intervals/aggr_us").read_text())
                for scheme in sorted(ctx.glob("schemes/[0-9]*")):
                    if (scheme / "action").read_text().strip() != "pageout":
                        continue
                    age = int((scheme / "access_pattern/age/min").read_text())
                    return f"DAMON pages out memory idle for {age * aggr_us / 1e6:g} s or more"
    except (OSError, ValueError):
        return None
    return None


def describe() -> dict:
    """Everything above in one JSON-ready dict."""
    return {
        "cores": usable_cores(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "memory_gib": memory_gib(),
        "gpus": gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions(),
        "load_average": load_average(),
        "page_reclaim": page_reclaim(),
    }


def vector_tier(flags) -> str:
    """The best vector extension in ``flags`` (lib.hardware.VECTOR_TIERS), "" for none."""
    from lib.hardware import vector_tier as tier

    return tier(flags)


def identity(info: dict) -> tuple:
    """What tells two machines apart: cores, CPU model, vector extensions, GPUs."""
    return (
        info.get("cores"),
        info.get("cpu_model"),
        tuple(info.get("cpu_flags") or ()),
        tuple(info.get("gpus") or ()),
    )


def machine_slug(info: dict | None = None) -> str:
    """A short file-name-safe name for the machine, e.g. ``2cpu-amd-epyc-avx2`` or ``...-h100``."""
    info = info or describe()
    cpu = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*$", "", info["cpu_model"].lower())
    cpu = "-".join(re.findall(r"[a-z0-9]+", cpu)[:3]) or "cpu"
    slug = f"{info['cores']}cpu-{cpu}"
    tier = vector_tier(info.get("cpu_flags"))
    if tier:
        slug += f"-{tier}"
    if info["gpus"]:
        gpu = info["gpus"][0].split(",")[0].lower().replace("nvidia", "")
        slug += "-" + "-".join(re.findall(r"[a-z0-9]+", gpu)[:2])
    return slug


def summary_line(info: dict) -> str:
    """One line for a report header."""
    gpu = ", ".join(info["gpus"]) or "no GPU"
    v = info["versions"]
    mem = f"{info['memory_gib']} GiB" if info["memory_gib"] else "memory unknown"
    load = "/".join(str(x) for x in info["load_average"]) or "?"
    # The vector extensions tell two machines of one model name apart (int8 kernels need VNNI).
    flags = ", ".join(info.get("cpu_flags") or []) or "extensions not recorded"
    return (
        f"{info['cores']} cores ({info['cpu_model']}: {flags}), {mem}, {gpu}; "
        f"TensorFlow {v['tensorflow']}, Keras {v['keras']}, Python {v['python']}; "
        f"load average at start {load}"
        + (f"; {info['page_reclaim']}" if info.get("page_reclaim") else "")
    )
