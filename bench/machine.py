"""The one-line description of the machine every benchmark prints first (for bench/RESULTS.md)."""
from __future__ import annotations

import os
import platform


def describe(*software: str) -> str:
  """"machine: <OS>, <CPU>, <n> CPUs, <software...>, load average at start <x>"."""
  parts = [platform.platform(), platform.processor() or platform.machine(),
           f"{os.cpu_count()} CPUs", *software]
  return f"machine: {', '.join(parts)}, load average at start {os.getloadavg()[0]:.1f}"
