"""Per edge node: up to when is everything it recorded in the store, and which replays are owed.

Rules (DESIGN §2a; pure — time comes in as ``now_ms``, nothing here does IO or logs):
- ``frontier``: the newest timestamp of live data received in seq order, with no gap, in the current
  session (fed by ``live``). ``hole``: the timestamp from which data may be missing — opened by a seq
  gap the tracker gave up on, a death (the edge keeps recording while it is away), values this host
  shed under overload, or a host restart (``gap`` with ``from_ms`` None: the persisted mark).
- The *candidate* mark is the hole's start if a hole is open, else the frontier. ``cut()`` takes the
  candidates at the moment a batch is cut from the stream, ``written(cut)`` makes them the committed
  marks once that batch's store write has returned, and hands back the marks to persist. So a mark
  never covers data that is not durably stored, and never moves back.
- Every hole is answered with a Replay request from ``hole - margin_ms`` (the margin absorbs edges whose
  timestamps are not monotonic across devices). Each request for the same hole starts 1 ms earlier than
  the previous one, so the node's confirmation (``replay_done``: NDATA ``Node Control/Replay`` = from)
  names exactly one request; only the newest request's confirmation closes the hole.
- A request not confirmed within ``confirm_timeout_ms`` of the last sign of progress (the request, or
  historical data from the node) is sent again; after ``max_attempts`` the hole is closed unconfirmed
  (an edge that never confirms must not be replayed forever) and that is reported, to be counted.
- Shed values: the hole opens at the frontier *before* them and the replay waits for ``recovered``
  (no point asking for data while the store cannot take it).
- Rejected data (``lost``: a DDATA before its DBIRTH, an unknown alias, a malformed payload…) opens the
  hole at the frontier like a gap. Shedding and rejection *spoil* the outstanding request: its
  confirmation no longer closes the hole, since part of what it brought may have been dropped; it is
  asked again at the next gap/birth or after ``confirm_timeout_ms`` (a spoiled request does not count
  towards giving up).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tapline.store.relational import NodeMark

__all__ = ["CommitMarks", "NodeKey", "ReplayOrder", "ReplayUnconfirmed"]

NodeKey = tuple[str, str]
"""(group, node) = (district, pump-room id)."""


@dataclass(frozen=True, slots=True)
class ReplayOrder:
    """Send NCMD ``Node Control/Replay`` = ``from_ms`` to the node."""

    group: str
    node: str
    from_ms: int
    attempt: int


@dataclass(frozen=True, slots=True)
class ReplayUnconfirmed:
    """A hole was closed after ``attempts`` unconfirmed replay requests (count it, log it)."""

    group: str
    node: str
    hole_ms: int
    attempts: int


@dataclass(slots=True)
class _Request:
    from_ms: int
    progress_at: int
    attempt: int
    spoiled: bool = False


@dataclass(slots=True)
class _Node:
    committed: int | None = None
    frontier: int | None = None
    hole: int | None = None
    request: _Request | None = None
    shed: bool = False
    owed_since: int | None = None  # a hole opened by ``lost`` with no request yet

    def candidate(self) -> int | None:
        return self.hole if self.hole is not None else self.frontier


class CommitMarks:
    """Commit marks and owed replays of every edge node (see the module rules)."""

    def __init__(
        self, margin_ms: int = 30_000, confirm_timeout_ms: int = 30_000, max_attempts: int = 3
    ) -> None:
        self.margin_ms = margin_ms
        self.confirm_timeout_ms = confirm_timeout_ms
        self.max_attempts = max_attempts
        self._nodes: dict[NodeKey, _Node] = {}

    def _node(self, key: NodeKey) -> _Node:
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = _Node()
        return node

    # --- read-only ------------------------------------------------------------------------------------

    def committed(self, key: NodeKey) -> int | None:
        node = self._nodes.get(key)
        return None if node is None else node.committed

    def hole(self, key: NodeKey) -> int | None:
        node = self._nodes.get(key)
        return None if node is None else node.hole

    def open_holes(self) -> int:
        return sum(1 for node in self._nodes.values() if node.hole is not None)

    # --- inputs ---------------------------------------------------------------------------------------

    def load(self, marks: Iterable[NodeMark]) -> None:
        """Committed marks persisted by an earlier run of the host."""
        for mark in marks:
            node = self._node((mark.district, mark.site))
            node.committed = max(mark.committed_ms, node.committed or mark.committed_ms)

    def live(self, key: NodeKey, newest_ts: int) -> None:
        """Live data up to ``newest_ts`` was received in seq order and is in the batch being built."""
        node = self._node(key)
        if node.frontier is None or newest_ts > node.frontier:
            node.frontier = newest_ts

    def historical(self, key: NodeKey, now_ms: int) -> None:
        """Historical data arrived: an outstanding replay is making progress."""
        node = self._nodes.get(key)
        if node is not None and node.request is not None:
            node.request.progress_at = now_ms

    def gap(self, key: NodeKey, from_ms: int | None, now_ms: int) -> ReplayOrder | None:
        """Data from ``from_ms`` on may be missing (None: since the persisted mark): open or widen the
        hole and ask for it, unless nothing is known to ask from (a node never seen before)."""
        node = self._node(key)
        starts = [t for t in (from_ms, node.frontier, node.hole) if t is not None]
        if from_ms is None:
            starts = [t for t in (node.committed, node.hole) if t is not None]
        if not starts:
            return None
        node.hole = min(starts)
        if node.shed:
            return None  # asked for once the store is back (``recovered``)
        return self._request(key, node, now_ms, attempt=1)

    def offline(self, key: NodeKey) -> None:
        """The node's session ended: what it records until its next birth will be missing."""
        node = self._node(key)
        if node.frontier is not None:
            node.hole = node.frontier if node.hole is None else min(node.hole, node.frontier)

    def shed(self, key: NodeKey, oldest_ts: int) -> None:
        """Values of the node from ``oldest_ts`` on were dropped under overload (call before ``live``)."""
        node = self._node(key)
        node.hole = min(t for t in (node.frontier, node.hole, oldest_ts) if t is not None)
        node.shed = True
        if node.request is not None:
            node.request.spoiled = True

    def lost(self, key: NodeKey, now_ms: int) -> None:
        """Data of the node was received but rejected: it is owed from the frontier on (asked for at
        the next birth or gap, or by ``due`` after ``confirm_timeout_ms``)."""
        node = self._node(key)
        start = node.frontier if node.frontier is not None else node.committed
        if start is not None:
            node.hole = start if node.hole is None else min(node.hole, start)
        if node.request is not None:
            node.request.spoiled = True
        elif node.hole is not None and node.owed_since is None:
            node.owed_since = now_ms

    def recovered(self, now_ms: int) -> list[ReplayOrder]:
        """The store takes writes again: ask for what was shed."""
        orders = []
        for key, node in sorted(self._nodes.items()):
            if node.shed:
                node.shed = False
                if node.hole is not None:
                    orders.append(self._request(key, node, now_ms, attempt=1))
        return orders

    def replay_done(self, key: NodeKey, from_ms: int) -> bool:
        """The node confirmed a replay; True if it was the newest request (the hole is then closed).

        Called in stream order, so the data of the replay precedes it in the batch being built.
        """
        node = self._nodes.get(key)
        request = None if node is None else node.request
        if node is None or request is None or request.from_ms != from_ms or request.spoiled:
            return False
        node.hole, node.request, node.owed_since = None, None, None
        return True

    def due(self, now_ms: int) -> list[ReplayOrder | ReplayUnconfirmed]:
        """Replay requests to send again, and holes given up on."""
        out: list[ReplayOrder | ReplayUnconfirmed] = []
        for key, node in sorted(self._nodes.items()):
            request = node.request
            owed = node.owed_since
            if request is None and owed is not None and node.hole is not None and not node.shed:
                if now_ms - owed >= self.confirm_timeout_ms:
                    out.append(self._request(key, node, now_ms, 1))
                continue
            if (
                request is None
                or node.hole is None
                or node.shed
                or now_ms - request.progress_at < self.confirm_timeout_ms
            ):
                continue
            if request.spoiled:
                out.append(self._request(key, node, now_ms, request.attempt))
            elif request.attempt >= self.max_attempts:
                out.append(ReplayUnconfirmed(key[0], key[1], node.hole, request.attempt))
                node.hole, node.request, node.owed_since = None, None, None
            else:
                out.append(self._request(key, node, now_ms, request.attempt + 1))
        return out

    def _request(self, key: NodeKey, node: _Node, now_ms: int, attempt: int) -> ReplayOrder:
        assert node.hole is not None
        from_ms = node.hole - self.margin_ms
        if node.request is not None:
            from_ms = min(from_ms, node.request.from_ms - 1)
        node.request = _Request(from_ms, now_ms, attempt)
        node.owed_since = None
        return ReplayOrder(key[0], key[1], from_ms, attempt)

    # --- batches --------------------------------------------------------------------------------------

    def cut(self) -> dict[NodeKey, int]:
        """Candidate marks now, for the batch being cut (only those ahead of the committed mark)."""
        out: dict[NodeKey, int] = {}
        for key, node in self._nodes.items():
            candidate = node.candidate()
            if candidate is not None and (node.committed is None or candidate > node.committed):
                out[key] = candidate
        return out

    def written(self, cut: dict[NodeKey, int]) -> list[NodeMark]:
        """The batch cut with ``cut`` is durably stored: advance the marks; return them to persist."""
        changed = []
        for key, candidate in cut.items():
            node = self._node(key)
            if node.committed is None or candidate > node.committed:
                node.committed = candidate
                changed.append(NodeMark(key[0], key[1], candidate))
        return changed
