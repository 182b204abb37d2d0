"""Idle-time work for the explorer: render the tabs that are not open, so that opening one shows it at once.

On an update the explorer renders and sends only the open tab's panel (the fast path: a 256-token text is
~0.3 MB for the tokens tab, ~1.3 MB for all eight). Once the kernel has been idle for `delay_s`, `IdleRenderer`
calls `step(state)` once per event-loop turn (`gap_s` apart), each call doing one short piece of work (one
tab), so a keystroke arriving meanwhile waits for one piece at most. A newer state cancels the rest. Without a
running event loop (plain Python, the tests) nothing is scheduled: tabs are then rendered when opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable


class IdleRenderer:
    """Runs `step(state)` after `delay_s` of quiet, then again every `gap_s` while it returns True."""

    def __init__(self, step: Callable[[Hashable], bool], delay_s: float = 0.4, gap_s: float = 0.02) -> None:
        if not callable(step):
            raise TypeError("step must be callable")
        if delay_s < 0 or gap_s < 0:
            raise ValueError(f"delay_s and gap_s must be >= 0, got {delay_s} and {gap_s}")
        self.step, self.delay_s, self.gap_s = step, delay_s, gap_s
        self._handle: asyncio.TimerHandle | None = None

    def schedule(self, state: Hashable) -> bool:
        """Start over for `state` (cancelling earlier work); False when no event loop runs (nothing scheduled)."""
        self.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._handle = loop.call_later(self.delay_s, self._run, loop, state)
        return True

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self, loop: asyncio.AbstractEventLoop, state: Hashable) -> None:
        self._handle = None
        try:
            more = self.step(state)
        except Exception:  # idle work must never raise into the kernel: the tab is rendered when opened instead
            more = False
        if more:
            self._handle = loop.call_later(self.gap_s, self._run, loop, state)
