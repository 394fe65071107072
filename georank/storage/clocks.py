"""The commit lock's clocks (:mod:`georank.storage.lock`): the S3 server's (its ``Date`` headers), the
host's, and a hand-moved one for tests. Driver only."""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Mapping
from typing import Protocol

from georank.errors import WriteError

log = logging.getLogger(__name__)


class LockClock(Protocol):
    """The one clock leases are judged on, and the local waits of one driver."""

    name: str

    def now_ms(self) -> int:
        """A lower bound of the shared clock's time now, in ms since the epoch."""

    def uncertainty_ms(self) -> int:
        """How far the shared clock may be ahead of :meth:`now_ms` (its upper bound minus it)."""

    def observe(self, headers: Mapping[str, str], sent_s: float, received_s: float) -> None:
        """Learn from a server response (``headers``, sent/received on ``time.monotonic``)."""

    def monotonic_s(self) -> float:
        """This driver's elapsed time, for deadlines."""

    def wait(self, seconds: float, *, stop: threading.Event | None = None, why: str = "") -> bool:
        """Sleep ``seconds`` of :meth:`monotonic_s`; True when ``stop`` was set first."""


class ServerClock:
    """The S3 server's clock, from the ``Date`` header (whole seconds) of its responses.

    A response sent at monotonic ``s`` and received at ``r`` with ``Date: D`` was stamped at a
    server time in ``[D, D + 1 s)`` somewhere between ``s`` and ``r``; so at monotonic ``m`` the
    server's time is at least ``D + (m - r)`` and below ``D + 1 s + (m - s)``. The tightest bounds
    over all responses are kept. No driver wall clock is read.
    """

    name = "s3-server"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._low: float | None = None  # server ms = _low + monotonic ms, at least
        self._high: float | None = None  # ... and less than _high + monotonic ms

    def observe(self, headers: Mapping[str, str], sent_s: float, received_s: float) -> None:
        date = headers.get("date") or headers.get("Date")
        if not date:
            return
        stamp_ms = email.utils.parsedate_to_datetime(date).timestamp() * 1000.0
        low, high = stamp_ms - received_s * 1000.0, stamp_ms + 1000.0 - sent_s * 1000.0
        with self._lock:
            if self._low is None or self._high is None or max(self._low, low) > min(self._high, high):
                self._low, self._high = low, high  # first response, or the server's clock jumped
            else:
                self._low, self._high = max(self._low, low), min(self._high, high)

    def now_ms(self) -> int:
        with self._lock:
            if self._low is None:
                raise WriteError("commit lock: expected a response from the S3 server before reading its clock, got none")
            return int(self._low + time.monotonic() * 1000.0)

    def uncertainty_ms(self) -> int:
        with self._lock:
            return 1000 if self._low is None or self._high is None else int(self._high - self._low) + 1

    def monotonic_s(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, *, stop: threading.Event | None = None, why: str = "") -> bool:
        return (stop or threading.Event()).wait(max(seconds, 0.0))


class HostClock:
    """The host's wall clock: every driver of a local table runs on this one host."""

    name = "host"

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def uncertainty_ms(self) -> int:
        return 0

    def observe(self, headers: Mapping[str, str], sent_s: float, received_s: float) -> None:
        return None

    def monotonic_s(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, *, stop: threading.Event | None = None, why: str = "") -> bool:
        return (stop or threading.Event()).wait(max(seconds, 0.0))


__all__ = ["HostClock", "LockClock", "ServerClock"]
