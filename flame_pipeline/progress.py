"""Progress of a long stage, on stderr: a tqdm bar on a terminal; anywhere else (a pipe, CI,
Dagster's captured logs) the same figures as a plain line when it starts, every
``LINE_EVERY_S`` seconds and when it ends, never a carriage return."""
from __future__ import annotations

import sys

from tqdm import tqdm

LINE_EVERY_S = 10.0
# the plain line: no bar characters; ETA and rate as tqdm computes them for the bar
LINE = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
LINE_NO_TOTAL = "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]"


class Lines(tqdm):
    """tqdm that writes each refresh as a line of its own."""

    monitor_interval = 0   # refreshes are driven by update() alone: no monitor thread
    last_line = ""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        line = self.__str__() if msg is None else msg
        if line in ("", self.last_line):   # tqdm clearing the bar, or nothing new to say
            return False
        self.fp.write(line + "\n")
        self.fp.flush()
        self.last_line = line
        return True

    def close(self) -> None:
        if not self.disable:
            self.display()  # the final figures; tqdm's own clean-up then adds no line
        self.leave = False
        super().close()


def progress(total: int | None, desc: str, unit: str, *, initial: int = 0,
             enabled: bool = True) -> tqdm:
    """A progress bar over ``total`` units (None: unknown) starting at ``initial``; use it as a
    context manager, ``update(n)`` it and put the current figures in ``set_postfix_str``.
    ``enabled=False`` (a torchrun rank other than 0) shows nothing."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=not enabled)
    return Lines(total=total, desc=desc, unit=unit, initial=initial, disable=not enabled,
                 mininterval=LINE_EVERY_S, miniters=1, file=sys.stderr,
                 bar_format=LINE if total else LINE_NO_TOTAL)
