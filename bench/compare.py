"""One row of a benchmark: ours against a peer, both measured the same way
(whole processes, the same cache state), with the ratios peer ÷ ours of wall
time and of CPU, and a target that is met only when both meet it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from measure import Run

LEGEND = ("ratio = peer ÷ ours, of wall time and of CPU (user+sys): > 1 means ours is faster / uses less CPU; "
          "a target is met only when both ratios meet it")


@dataclass
class Row:
    step: str
    ours: Run
    peer: Run | None = None
    peer_label: str = ""
    # "3x": peer ÷ ours at least 3 in wall time and in CPU; "<1s": ours under 1 s of wall time and of CPU
    target: str = ""

    def ratios(self) -> tuple[float, float] | None:
        if self.peer is None:
            return None
        return _ratio(self.peer.wall_s, self.ours.wall_s), _ratio(self.peer.cpu_s, self.ours.cpu_s)

    def met(self) -> bool | None:
        if self.target.startswith("<"):
            limit = float(self.target[1:].removesuffix("s"))
            return self.ours.wall_s < limit and self.ours.cpu_s < limit
        if self.target.endswith("x"):
            ratios = self.ratios()
            return ratios is not None and min(ratios) >= float(self.target[:-1])
        return None


def _ratio(peer: float, ours: float) -> float:
    return peer / ours if ours else math.inf


def _times(ratio: float) -> str:
    return f"{ratio:7.2f}x" if ratio >= 0.1 else f"{ratio:7.3f}x"


def table(rows: list[Row], ours_label: str = "ours") -> str:
    """The rows as a text table, with the legend."""
    step_w = max(len("step"), *(len(r.step) for r in rows)) + 2
    peer_w = max(len("peer"), *(len(r.peer_label) for r in rows)) + 2
    lines = [f"{'step':<{step_w}}{ours_label + ' s':>10}{'cpu s':>8}  {'peer':<{peer_w}}{'s':>7}{'cpu s':>8}"
             f"{'wall x':>8}{'cpu x':>8}{'target':>9}  met"]
    for row in rows:
        ratios = row.ratios()
        peer = (f"{row.peer_label:<{peer_w}}{row.peer.wall_s:7.2f}{row.peer.cpu_s:8.2f}"
                f"{_times(ratios[0])}{_times(ratios[1])}" if row.peer else f"{'':<{peer_w}}{'':>7}{'':>8}{'':>8}{'':>8}")
        target = f">={row.target}" if row.target.endswith("x") else row.target
        met = {True: "yes", False: "NO", None: ""}[row.met()]
        lines.append(f"{row.step:<{step_w}}{row.ours.wall_s:10.2f}{row.ours.cpu_s:8.2f}  {peer}{target:>9}  {met}")
    lines.append(f"({LEGEND})")
    return "\n".join(lines)
