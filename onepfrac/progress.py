"""Progress for people and for batch logs: a tqdm bar on a terminal, a plain line every N seconds
otherwise (Slurm, nohup), so a log file holds readable lines and no megabytes of carriage returns.

    for item in progress(items, total=len(items), desc="rendering", unit="class"):
        ...

ONEPFRAC_PROGRESS_INTERVAL sets the seconds between lines in a log (default 30).
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

from onepfrac.errors import UsageError

INTERVAL_VARIABLE = "ONEPFRAC_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0


def interval() -> float:
    """Seconds between two lines in a log, from ONEPFRAC_PROGRESS_INTERVAL."""
    text = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{INTERVAL_VARIABLE}={text!r}: expected a number of seconds above 0, "
                         "for example 30")
    return value


def is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream is no terminal
        return False


def progress(iterable=None, total=None, desc: str = "", unit: str = "it", enabled: bool = True,
             *, initial: int = 0, unit_scale: bool = False, leave: bool = True, file=None):
    """A tqdm bar when `file` (stderr) is a terminal, a LineProgress otherwise, a silent tqdm
    when not `enabled`. All three take update(n), set_postfix(...), close() and `with`."""
    file = sys.stderr if file is None else file
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if is_terminal(file):
        return tqdm(iterable, total=total, desc=desc or None, unit=unit, initial=initial,
                    unit_scale=unit_scale, unit_divisor=1024 if unit == "B" else 1000,
                    leave=leave, dynamic_ncols=True, file=file)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial,
                        unit_scale=unit_scale, every=interval(), file=file)


class LineProgress:
    """A progress report for logs: one line per `every` seconds while work goes on, and a last
    line at close() if any line was written (a short loop stays silent)."""

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "it", initial: int = 0,
                 unit_scale: bool = False, every: float = DEFAULT_INTERVAL, file=None):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.start_n, self.unit_scale, self.every = initial, initial, unit_scale, every
        self.file = sys.stderr if file is None else file
        self.started = self.last = time.monotonic()
        self.postfix = ""
        self.lines = 0
        self.closed = False

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __len__(self):
        return self.total if self.total is not None else len(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        # the last step is left to close(), which says how long it all took
        if now - self.last >= self.every and not (self.total and self.n >= self.total):
            self.last = now
            self._write(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **values) -> None:
        values = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:  # tqdm's; a line is written at the interval anyway
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.lines:
            self._write(time.monotonic(), final=True)

    def _amount(self, value: float) -> str:
        """'2.00MB' when scaled (tqdm's own units), '1,234' otherwise."""
        if self.unit_scale:
            return tqdm.format_sizeof(value, divisor=1024 if self.unit == "B" else 1000) + self.unit
        return f"{value:,.0f}"

    def _write(self, now: float, final: bool = False) -> None:
        elapsed = now - self.started
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        unit = "" if self.unit_scale else f" {self.unit}"
        parts = [f"{self._amount(self.n)}/{self._amount(self.total)}{unit}"
                 if self.total else f"{self._amount(self.n)}{unit}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        parts.append(f"{self._amount(rate)}/s" if self.unit_scale else f"{rate:.3g} {self.unit}/s")
        parts.append(f"{'took' if final else 'elapsed'} {tqdm.format_interval(elapsed)}")
        if not final and self.total and rate > 0 and self.n < self.total:
            parts.append(f"left ~{tqdm.format_interval((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        prefix = f"{self.desc}: " if self.desc else ""
        print(prefix + ", ".join(parts), file=self.file, flush=True)
        self.lines += 1
