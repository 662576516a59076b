"""The timer thread: registration deadline, PING after silence, and the drops that follow.

One thread checks every connection a few times per shortest timeout.  It reads each
client's liveness stamps once (their reader may reset them meanwhile), acts through the
hub (``kill``, ``send``) and takes the registry lock only to copy the client list and to
queue lines.  The limits are options in :class:`~chatroom.config.Config`:

* not registered within ``register_timeout``: ``Registration timed out``;
* a line started but not finished within ``line_timeout``: ``Read timeout``;
* silent for ``ping_interval``: a ``PING``; no answer within ``ping_timeout``: ``Ping timeout``;
* closing, but its last lines not taken within :data:`CLOSE_GRACE`: cut;
* keeping a nick registered to someone else past ``nick_grace``: renamed to a guest name.

Besides the per-connection checks it runs *chores*: work the server hands it with
:meth:`Housekeeper.every` (the files store's retention purge), each at its own interval,
between two rounds of checks.  A chore that fails is logged and tried again next time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from chatroom import login
from chatroom import protocol as P
from chatroom.hub import Hub
from chatroom.registry import Client

log = logging.getLogger(__name__)

CLOSE_GRACE = 5.0  # seconds a closing connection gets to take its last lines


class Housekeeper:
    """Start it once; it stops by itself when the hub's ``stopping`` event is set."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.thread = threading.Thread(target=self.run, name="housekeeper", daemon=True)
        # [next due (monotonic), interval, chore]; set up before start(), then this thread's
        self._chores: list[tuple[float, float, Callable[[], bool]]] = []

    def every(self, interval: float, chore: Callable[[], bool]) -> None:
        """Run ``chore`` about every ``interval`` seconds (first soon after start); when it
        returns True (more left to do) it runs again at the next tick.  Before start()."""
        self._chores.append((time.monotonic(), interval, chore))

    def _run_chores(self, now: float) -> None:
        for i, (due, interval, chore) in enumerate(self._chores):
            if now < due:
                continue
            more = False
            try:
                more = chore()
            except Exception:  # a broken chore must not end the timers for everyone
                log.exception("housekeeping chore %s failed", getattr(chore, "__name__", chore))
            self._chores[i] = (now if more else now + interval, interval, chore)

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        hub, cfg = self.hub, self.hub.config
        tick = max(0.05, min(1.0, cfg.register_timeout / 4, cfg.ping_interval / 4,
                             cfg.ping_timeout / 4, cfg.line_timeout / 4,
                             max(cfg.nick_grace, 0.2) / 4))
        if self._chores:
            tick = min(tick, max(0.05, min(iv for _, iv, _ in self._chores)))
        while not hub.stopping.wait(tick):
            now = time.monotonic()
            self._run_chores(now)
            with hub.reg.lock:
                clients = list(hub.reg.clients)
            for c in clients:
                try:
                    self.check(c, now)
                except Exception:  # a bug here must not end every timer for everyone
                    log.exception("timer check failed for %s", c)

    def check(self, c: Client, now: float) -> None:
        hub, cfg = self.hub, self.hub.config
        if c.closing and now - c.closing_since > CLOSE_GRACE:
            # Its last words could not be written (it stopped reading): cut it.
            with hub.delivering():
                hub.writer.doom(c, c.quit_reason or "Closing")
            return
        if c.quit_reason is not None:
            return
        # Each field is read once: the reader thread may reset it meanwhile.
        partial_since, ping_sent = c.partial_since, c.ping_sent
        if not c.registered and now - c.connected_at > cfg.register_timeout:
            hub.kill(c, "Registration timed out")
        elif partial_since is not None and now - partial_since > cfg.line_timeout:
            hub.kill(c, "Read timeout: line not finished")
        elif ping_sent is not None:
            if now - ping_sent > cfg.ping_timeout:
                hub.kill(c, f"Ping timeout: {int(now - c.last_active)} seconds")
        elif c.registered and now - c.last_active > cfg.ping_interval:
            c.ping_sent = now
            hub.send(c, P.format_line(None, "PING", cfg.name))
        deadline = c.nick_deadline
        if deadline is not None and now > deadline:
            login.grace_over(hub, c)
