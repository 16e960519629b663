"""Progress of a long stage (``infer``: hours on a large scene) for displays that must not be
flooded: which calls of an ``on_progress(tiles_done, tiles_total, out_px_done)`` callback are
worth publishing (a Prefect progress artifact) or logging, with the output rate and an ETA.

No I/O and no Prefect here: :class:`ProgressMeter` turns callback calls into
:class:`ProgressTick` values; the caller (``flows.upscale_scene``) publishes and logs them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProgressTick:
    """One call of the callback, measured.

    Attributes:
        done: tiles done (those reused from an earlier run included).
        total: tiles of the scene.
        percent: ``100 * done / total`` in [0, 100] (100 for a scene without tiles).
        mp_per_s: output megapixels per second of wall time since the first call, over the
            tiles run in this call's run; ``None`` before any output.
        eta_s: seconds left at the tile rate so far; 0 when done, ``None`` before any rate.
        publish: worth sending to a progress display (the throttle allows it).
        log: worth a log line (a new ``log_step_pct`` step, the first call or the last tile).
    """

    done: int
    total: int
    percent: float
    mp_per_s: float | None
    eta_s: float | None
    publish: bool
    log: bool

    def line(self, stage: str = "infer") -> str:
        """``infer: 40 % (160/400 tiles), 12.3 output MP/s, ETA 5 min 10 s``."""
        rate = f", {self.mp_per_s:.3g} output MP/s" if self.mp_per_s is not None else ""
        eta = f", ETA {format_seconds(self.eta_s)}" if self.eta_s is not None else ""
        return f"{stage}: {self.percent:.0f} % ({self.done}/{self.total} tiles){rate}{eta}"


def format_seconds(seconds: float) -> str:
    """``45 s``, ``5 min 10 s``, ``3 h 02 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass
class ProgressMeter:
    """Throttles progress reports: at most one publishable tick per ``min_interval_s`` seconds
    and per ``min_step_pct`` percent (the first and the last call are always publishable), and a
    log line at each ``log_step_pct`` step. A 10,000-tile scene then costs at most 101
    updates and 11 log lines.

    Args:
        min_interval_s: least wall time between two published ticks (s, >= 0).
        min_step_pct: least progress between two published ticks (percentage points, >= 0).
        log_step_pct: progress between two log lines (percentage points, > 0).
        clock: monotonic time in seconds (a fake one in tests).
    """

    min_interval_s: float = 2.0
    min_step_pct: float = 1.0
    log_step_pct: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _t0: float | None = field(default=None, init=False)
    _done0: int = field(default=0, init=False)
    _pub: tuple[float, float] | None = field(default=None, init=False)  # (time, percent)
    _log_step: int = field(default=-1, init=False)
    _finished: bool = field(default=False, init=False)

    def update(self, done: int, total: int, out_px: int) -> ProgressTick:
        """Measure one call of ``on_progress(done, total, out_px)``.

        Args:
            done: tiles done so far, >= 0 (reused tiles included).
            total: tiles of the scene, >= 0.
            out_px: output pixels written by this run's tiles so far, >= 0.
        """
        now = self.clock()
        if self._t0 is None:
            self._t0, self._done0 = now, done
        elapsed = now - self._t0
        percent = 100.0 if total <= 0 else min(100.0, 100.0 * done / total)
        ran = done - self._done0
        mp_per_s = out_px / 1e6 / elapsed if out_px > 0 and elapsed > 0 else None
        if done >= total:
            eta_s: float | None = 0.0
        else:
            eta_s = (total - done) * elapsed / ran if ran > 0 and elapsed > 0 else None
        last = done >= total and not self._finished
        publish = self._pub is None or last or (
            now - self._pub[0] >= self.min_interval_s
            and percent - self._pub[1] >= self.min_step_pct)
        if publish:
            self._pub = (now, percent)
        step = math.floor(percent / self.log_step_pct)
        log = step > self._log_step or last
        self._log_step = max(self._log_step, step)
        self._finished = self._finished or done >= total
        return ProgressTick(done=done, total=total, percent=percent, mp_per_s=mp_per_s,
                            eta_s=eta_s, publish=publish, log=log)
