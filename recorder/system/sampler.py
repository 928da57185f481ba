"""One system metrics sample: wandb's keys, computed as wandb 0.31's system monitor computes
them (core/internal/monitor/system.go and the NVML part, nvml.py), through psutil.

- `cpu`: the process's CPU percent since the previous sample over the physical core count
  (left out of the first sample, as wandb does); `proc.cpu.threads`; `proc.memory.rssMB`,
  `proc.memory.percent` (of total memory); `memory_percent`, `proc.memory.availableMB` (the
  machine's);
- `disk.<path>.usagePercent`, `disk.<path>.usageGB` for each disk path ("/"), and
  `disk.<device>.in` / `.out`: MB read / written since the sampler started, for the devices
  backing those paths (else every real block device);
- `network.sent`, `network.recv` (bytes since the sampler started), and
  `network.tcpRetransmits` (TCP segments retransmitted since then; Linux).

A psutil call that raises is not caught here: the sampler thread logs it once and stops.
"""

import os

import psutil

from .facts import DISK_PATHS

MB = 1024 * 1024
GB = 1024 * MB
_PSEUDO = ("loop", "ram", "zram")


class Sampler:
    def __init__(self, pid=None, disk_paths=DISK_PATHS):
        self.proc = psutil.Process(pid or os.getpid())
        self.disk_paths = list(disk_paths)
        self.cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 0
        self.proc.cpu_percent(None)   # the first call only sets the starting point
        self._first = True
        self.devices = self._devices()
        io = psutil.disk_io_counters(perdisk=True) or {}
        self._io0 = {d: (io[d].read_bytes, io[d].write_bytes) for d in self.devices if d in io}
        net = psutil.net_io_counters(pernic=False)
        self._net0 = (net.bytes_sent, net.bytes_recv) if net else None
        self._retrans0 = tcp_retransmits()

    def _devices(self):
        """The devices backing the disk paths (system.go's initializeDisk)."""
        parts = psutil.disk_partitions(all=False)
        devices, root_seen = set(), False
        for part in parts:
            if part.mountpoint == "/":
                root_seen = True
            for path in self.disk_paths:
                if path.startswith(part.mountpoint):
                    devices.add(part.device.removeprefix("/dev/"))
        if not root_seen and self.disk_paths == ["/"]:
            devices.update(p.device.removeprefix("/dev/") for p in parts
                           if not p.device.removeprefix("/dev/").startswith(_PSEUDO))
        ios = psutil.disk_io_counters(perdisk=True) or {}
        devices = {d for d in devices if d in ios}
        if not devices:
            devices = {d for d in ios if not d.startswith(_PSEUDO)}
        return sorted(devices)

    def sample(self):
        """{key: float} of one sample."""
        m = {}
        net = psutil.net_io_counters(pernic=False)
        if net and self._net0:
            m["network.sent"] = float(net.bytes_sent - self._net0[0])
            m["network.recv"] = float(net.bytes_recv - self._net0[1])
        retrans = tcp_retransmits()
        if retrans is not None and self._retrans0 is not None:
            m["network.tcpRetransmits"] = float(retrans - self._retrans0)
        for path in self.disk_paths:
            usage = psutil.disk_usage(path)
            # gopsutil's UsedPercent, unrounded (psutil rounds its percent to 0.1)
            m[f"disk.{path}.usagePercent"] = usage.used / (usage.used + usage.free) * 100.0
            m[f"disk.{path}.usageGB"] = usage.used / GB
        if self._io0:
            io = psutil.disk_io_counters(perdisk=True) or {}
            for dev, (r0, w0) in self._io0.items():
                if dev in io:
                    m[f"disk.{dev}.in"] = (io[dev].read_bytes - r0) / MB
                    m[f"disk.{dev}.out"] = (io[dev].write_bytes - w0) / MB
        vm = psutil.virtual_memory()
        m["memory_percent"] = (vm.total - vm.available) / vm.total * 100.0
        m["proc.memory.availableMB"] = vm.available / MB
        with self.proc.oneshot():
            rss = self.proc.memory_info().rss
            cpu = self.proc.cpu_percent(None)
            threads = self.proc.num_threads()
        m["proc.memory.rssMB"] = rss / MB
        if vm.total:
            m["proc.memory.percent"] = rss / vm.total * 100.0
        if not self._first:
            m["cpu"] = cpu / self.cores if self.cores else cpu
        self._first = False
        m["proc.cpu.threads"] = float(threads)
        return m


def tcp_retransmits():
    """TCP segments retransmitted since boot (/proc/net/snmp), or None off Linux."""
    try:
        with open("/proc/net/snmp") as f:
            lines = [ln.split() for ln in f if ln.startswith("Tcp:")]
    except OSError:
        return None
    if len(lines) < 2 or "RetransSegs" not in lines[0]:
        return None
    return int(lines[1][lines[0].index("RetransSegs")])
