"""NVIDIA GPUs through NVML (NVIDIA's own bindings, `nvidia-ml-py`, import name pynvml; the
`gpu` extra): the environment's GPU facts and the `gpu.N.*` keys of each sample, named and
computed as wandb's GPU monitor does (xpu/src/gpu_nvidia.rs).

No bindings, or no driver (the library does not load, the driver is not loaded): no GPU keys,
said once at debug level, no error. A metric the device does not support is left out for the
rest of the run, as wandb does. Any other NVML failure raises `NvmlError` from `sample`; the
sampler then logs it once and stops sampling the GPUs (the rest goes on).
"""

import ctypes
import logging
import sys

from tfblackbox.schema.errors import BlackboxError

log = logging.getLogger("tfblackbox")


class NvmlError(BlackboxError):
    """NVML failed in a way the GPU sampler does not expect (not a missing driver)."""


_NO_DRIVER = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded",
              "NVMLError_FunctionNotFound", "NVMLError_NoPermission")
_UNSUPPORTED = ("NVMLError_NotSupported", "NVMLError_NoPermission",
                "NVMLError_FunctionNotFound", "NVMLError_InvalidArgument",
                "NVMLLibraryMismatchError")   # pynvml newer than the driver's NVML


def open_nvml():
    """An Nvml over every NVIDIA GPU, or None when there are none to see (no bindings, no
    driver, no device). Raises NvmlError when NVML is there but fails."""
    if not _driver_library_loads():
        log.debug("tfblackbox: no NVML library (libnvidia-ml.so.1, NVIDIA's driver): no GPU keys")
        return None
    try:
        import pynvml
    except ImportError:
        log.debug("tfblackbox: no NVML bindings (pip install 'tfblackbox[gpu]'): no GPU keys")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        if type(e).__name__ in _NO_DRIVER:
            log.debug("tfblackbox: NVML cannot start (%s): no NVIDIA driver, no GPU keys", e)
            return None
        raise NvmlError(f"NVML could not start: {type(e).__name__}: {e}") from e
    except OSError as e:   # a library that loads and is not NVML
        raise NvmlError(f"NVML could not start: {e}") from e
    try:
        nvml = Nvml(pynvml)
    except pynvml.NVMLError as e:
        _shutdown(pynvml)
        raise NvmlError(f"NVML failed listing the GPUs: {type(e).__name__}: {e}") from e
    if not nvml.count:
        _shutdown(pynvml)
        return None
    return nvml


def _driver_library_loads():
    """Whether NVML's library loads as pynvml loads it on Linux (libnvidia-ml.so.1, found as
    dlopen finds it): importing pynvml costs 13-30 ms of CPU at every recorded run's start,
    for nothing on a machine without NVIDIA's driver. Elsewhere pynvml is asked."""
    if not sys.platform.startswith("linux"):
        return True
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def _shutdown(pynvml):
    try:
        pynvml.nvmlShutdown()
    except Exception:
        pass


def _text(value):
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class Nvml:
    def __init__(self, pynvml):
        self.nv = pynvml
        self.count = pynvml.nvmlDeviceGetCount()
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(self.count)]
        self._off = set()     # (device, metric) the device does not support

    def facts(self):
        """gpu_type, gpu_count, gpu_nvidia [{name, memory_total, cuda_cores, architecture,
        uuid}], cuda_version: the EnvironmentRecord's GPU fields."""
        nv, gpus = self.nv, []
        for i, h in enumerate(self.handles):
            info = {"name": _text(nv.nvmlDeviceGetName(h))}
            for key, call in (("memory_total", lambda: nv.nvmlDeviceGetMemoryInfo(h).total),
                              ("cuda_cores", lambda: nv.nvmlDeviceGetNumGpuCores(h)),
                              ("architecture", lambda: _arch(nv, h)),
                              ("uuid", lambda: _text(nv.nvmlDeviceGetUUID(h)))):
                value = self._call(i, key, call)
                if value not in (None, ""):
                    info[key] = value
            gpus.append(info)
        facts = {"gpu_count": self.count, "gpu_nvidia": gpus, "gpu_type": gpus[0]["name"]}
        version = self._call(-1, "cuda", nv.nvmlSystemGetCudaDriverVersion)
        if version:
            facts["cuda_version"] = f"{version // 1000}.{version % 1000 // 10}"
        driver = self._call(-1, "driver", nv.nvmlSystemGetDriverVersion)
        if driver:
            facts["nvidia_driver_version"] = _text(driver)   # tfblackbox's; shown by `show`
        return facts

    def _call(self, device, metric, fn):
        """fn(), or None when the device does not support it (then never asked again)."""
        if (device, metric) in self._off:
            return None
        try:
            return fn()
        except Exception as e:
            if type(e).__name__ in _UNSUPPORTED:
                self._off.add((device, metric))
                return None
            raise NvmlError(f"NVML failed reading {metric} of GPU {device}: "
                            f"{type(e).__name__}: {e}") from e

    def sample(self, pid):
        """{gpu.N.<metric>: number} for every GPU (gpu.process.N.* for the GPUs this process
        uses), wandb's keys and units."""
        nv, out = self.nv, {}
        for i, h in enumerate(self.handles):
            def put(metric, fn, scale=1.0, i=i):
                v = self._call(i, metric, fn)
                if v is not None:
                    out[f"gpu.{i}.{metric}"] = float(v) * scale
            mine = self._uses(i, h, pid)
            util = self._call(i, "utilization", lambda: nv.nvmlDeviceGetUtilizationRates(h))
            if util is not None:
                out[f"gpu.{i}.gpu"], out[f"gpu.{i}.memory"] = float(util.gpu), float(util.memory)
            mem = self._call(i, "memoryInfo", lambda: nv.nvmlDeviceGetMemoryInfo(h))
            if mem is not None and mem.total:
                out[f"gpu.{i}.memoryAllocated"] = mem.used / mem.total * 100.0
                out[f"gpu.{i}.memoryAllocatedBytes"] = float(mem.used)
            put("temp", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
            power = self._call(i, "powerWatts", lambda: nv.nvmlDeviceGetPowerUsage(h))
            if power is not None:
                out[f"gpu.{i}.powerWatts"] = power / 1000.0
                limit = self._call(i, "enforcedPowerLimitWatts",
                                   lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h))
                if limit:
                    out[f"gpu.{i}.enforcedPowerLimitWatts"] = limit / 1000.0
                    out[f"gpu.{i}.powerPercent"] = power / limit * 100.0
            put("smClock", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
            put("memoryClock", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM))
            put("graphicsClock", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_GRAPHICS))
            put("fanSpeed", lambda: nv.nvmlDeviceGetFanSpeed(h))
            put("encoderUtilization", lambda: nv.nvmlDeviceGetEncoderUtilization(h)[0])
            if mine:
                for key in ("gpu", "memory", "memoryAllocated", "memoryAllocatedBytes", "temp",
                            "powerWatts", "enforcedPowerLimitWatts", "powerPercent"):
                    if f"gpu.{i}.{key}" in out:
                        out[f"gpu.process.{i}.{key}"] = out[f"gpu.{i}.{key}"]
        return out

    def _uses(self, i, h, pid):
        nv, pids = self.nv, set()
        for name in ("nvmlDeviceGetComputeRunningProcesses",
                     "nvmlDeviceGetGraphicsRunningProcesses"):
            procs = self._call(i, name, lambda: getattr(nv, name)(h))
            pids.update(p.pid for p in procs or ())
        return pid in pids

    def close(self):
        _shutdown(self.nv)


def _arch(nv, h):
    arch = nv.nvmlDeviceGetArchitecture(h)
    names = {getattr(nv, n): n[len("NVML_DEVICE_ARCH_"):].title()
             for n in dir(nv) if n.startswith("NVML_DEVICE_ARCH_") and n != "NVML_DEVICE_ARCH_T"}
    return names.get(arch, str(arch))
