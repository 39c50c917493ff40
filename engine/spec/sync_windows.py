"""Sync windows: when an app may be synced on a cluster (Argo CD's AppProject
`syncWindows`), written in gitops.yaml at the top level (for the apps and
clusters they name) or under an app (for that app):

    syncWindows:
      - name: nightly-freeze
        kind: deny                  # allow | deny
        schedule: "0 22 * * *"      # cron, 5 fields, in timeZone
        duration: 8h                # elapsed time: 30m, 8h, 1d, 1h30m
        timeZone: Europe/Berlin     # IANA name; UTC by default
        apps: [web*]                # top level only; shell patterns; all by default
        clusters: [production]      # shell patterns; all by default
        manualSync: false           # a person's sync may pass while it closes syncs

A window opens at each time of its schedule, read in its time zone (09:00
stays 09:00 across daylight saving; a time that a clock change skips fires at
the first minute after it, as cron does), and stays open for its duration.
Argo CD's rules decide: an active deny window closes syncs (deny wins over
allow); else an active allow window opens them; else any allow window closes
them; no window, no restriction. A person's sync passes a closed state when
every active deny window, or (outside the allow windows) some allow window,
has manualSync. Time is a parameter (`now`), the clock's only when none is given."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

CRON_FIELDS = 5
_DURATION = re.compile(r"(\d+[dhms])+")
_DURATION_PART = re.compile(r"(\d+)([dhms])")
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# How far ahead the next change is looked for, in time and in window edges.
HORIZON = timedelta(days=366)
MAX_EDGES = 2000


class WindowKind(str, Enum):
    ALLOW = "allow"
    DENY = "deny"


def parse_duration(text: str) -> timedelta:
    """`8h`, `30m`, `1h30m`, `2d`: a positive elapsed time."""
    if not _DURATION.fullmatch(text):
        raise ValueError(f"duration {text!r} is not a number and a unit (s, m, h, d), e.g. 30m, 8h, 1h30m")
    seconds = sum(int(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    if not seconds:
        raise ValueError(f"duration {text!r} is zero: the window would never be active")
    return timedelta(seconds=seconds)


class SyncWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=True)

    name: str = ""  # for messages; the schedule describes it when empty
    kind: WindowKind
    schedule: str
    duration: str
    time_zone: str = "UTC"
    apps: list[str] = Field(default_factory=list)  # empty: every app
    clusters: list[str] = Field(default_factory=list)  # empty: every cluster
    manual_sync: bool = False

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, schedule: str) -> str:
        fields = schedule.split()
        if len(fields) != CRON_FIELDS:  # cronsim also takes 6 (seconds): not a cron line
            raise ValueError(f"schedule {schedule!r} has {len(fields)} fields; a cron schedule has 5 "
                             "(minute hour day-of-month month day-of-week)")
        try:
            CronSim(schedule, datetime(2000, 1, 1, tzinfo=timezone.utc))
        except CronSimError as error:
            raise ValueError(f"schedule {schedule!r} is not a valid cron schedule: {error}") from None
        return schedule

    @field_validator("duration")
    @classmethod
    def _duration(cls, duration: str) -> str:
        parse_duration(duration)
        return duration

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"time zone {name!r} is not known (an IANA name such as Europe/Berlin, or UTC)") from None
        return name

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def length(self) -> timedelta:
        return parse_duration(self.duration)

    def __str__(self) -> str:
        called = f" {self.name}" if self.name else ""
        return f"{self.kind.value} window{called} ({self.schedule} for {self.duration}, {self.time_zone})"

    def applies_to(self, app: str, cluster: str) -> bool:
        return _matches(app, self.apps) and _matches(cluster, self.clusters)

    def active_until(self, at: datetime) -> datetime | None:
        """The end of the occurrence active at `at`, or None. Occurrences of one
        window have one length, so the latest start gives the latest end."""
        local = at.astimezone(self.zone).replace(microsecond=0) + timedelta(seconds=1)
        start = next(CronSim(self.schedule, local, reverse=True))  # the latest start at or before `at`
        end = start.astimezone(timezone.utc) + self.length  # elapsed time, whatever the clocks do
        return end if end > at else None

    def next_start(self, after: datetime) -> datetime:
        return next(CronSim(self.schedule, after.astimezone(self.zone))).astimezone(timezone.utc)


class AppSyncWindow(SyncWindow):
    """A window under an app: for that app alone, so it names no apps."""

    @field_validator("apps")
    @classmethod
    def _no_apps(cls, apps: list[str]) -> list[str]:
        if apps:
            raise ValueError("a window under an app is for that app: name apps only in the top-level syncWindows")
        return apps


def _matches(name: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class WindowState:
    """Whether syncs may run at `at`, and if not, which windows say so and when that changes."""

    at: datetime
    open: bool  # a scheduled sync or a heal may run
    manual: bool  # a person's sync may run
    closing: tuple[SyncWindow, ...] = ()  # active deny windows, or the allow windows none of which is active
    active: tuple[SyncWindow, ...] = ()
    next_change: datetime | None = None  # when `open` flips; None: no windows, or not before `searched_until`
    searched_until: datetime | None = None
    windows: tuple[SyncWindow, ...] = field(default=(), repr=False)

    def allows(self, manual: bool) -> bool:
        return self.open or (manual and self.manual)

    def reason(self) -> str:
        """Why syncs are closed and when they open, e.g. `deny window nightly (0 22 * * * for 8h,
        Europe/Berlin) is active until 2025-03-03 06:00 CET; syncs open at 2025-03-03 06:00 CET`."""
        if self.open:
            return "no sync window closes syncs"
        denies = [w for w in self.closing if w.kind is WindowKind.DENY]
        if denies:
            why = "; ".join(f"{w} is active until {format_time(w.active_until(self.at), w.zone)}" for w in denies)
        else:
            why = "outside every allow window: " + ", ".join(map(str, self.closing))
        return f"{why}; syncs open {self._when()}"

    def summary(self) -> str:
        """One cell for `gitops status`: `-` (no window), `open (allow office), closes at ...`,
        `closed (deny nightly), opens at ...`."""
        if not self.windows:
            return "-"
        if self.open:
            active = f" ({_names(self.active)})" if self.active else ""
            return f"open{active}" + (f", closes {self._when()}" if self.next_change else "")
        manual = "; manual syncs pass" if self.manual else ""
        return f"closed ({_names(self.closing)}){manual}, opens {self._when()}"

    def to_json(self) -> dict:
        return {"open": self.open, "manualSync": self.open or self.manual,
                "closing": [str(w) for w in self.closing], "active": [str(w) for w in self.active],
                "nextChange": self.next_change.isoformat() if self.next_change else None}

    def _zone(self) -> ZoneInfo:
        return (self.closing or self.windows)[0].zone

    def _when(self) -> str:
        if self.next_change is not None:
            return f"at {format_time(self.next_change, self._zone())}"
        return f"not before {format_time(self.searched_until, self._zone())}"


def _names(windows: tuple[SyncWindow, ...]) -> str:
    return ", ".join(f"{w.kind.value} {w.name or w.schedule}" for w in windows)


def format_time(at: datetime, zone: ZoneInfo) -> str:
    return f"{at.astimezone(zone):%Y-%m-%d %H:%M %Z}"


def window_state(windows: list[SyncWindow], now: datetime) -> WindowState:
    """The state at `now` (timezone-aware) of the windows of one app on one cluster."""
    if not windows:
        return WindowState(now, open=True, manual=True)
    open_, manual, closing, active = _verdict(windows, now)
    change, searched = _next_change(windows, now, open_)
    return WindowState(now, open_, manual, tuple(closing), tuple(active), change, searched, tuple(windows))


def state_for(spec, app, cluster: str, now: datetime | None = None) -> WindowState:
    """The windows' state for `app` on `cluster` (an appspec AppSpec and App):
    the repository's windows that name them, and the app's own; at `now` (the clock's when None)."""
    windows = [w for w in [*spec.sync_windows, *app.sync_windows] if w.applies_to(app.name, cluster)]
    return window_state(windows, now or datetime.now(timezone.utc))


def window_status(spec, app, cluster: str, now: datetime | None = None) -> dict:
    """What `gitops status` shows of the windows of `app` on `cluster`."""
    state = state_for(spec, app, cluster, now)
    return {**state.to_json(), "summary": state.summary()}


def _verdict(windows: list[SyncWindow], at: datetime) -> tuple[bool, bool, list[SyncWindow], list[SyncWindow]]:
    """(open, manual passes, the windows that close it, the active windows)."""
    active = [w for w in windows if w.active_until(at)]
    denies = [w for w in active if w.kind is WindowKind.DENY]
    if denies:
        return False, all(w.manual_sync for w in denies), denies, active
    allows = [w for w in windows if w.kind is WindowKind.ALLOW]
    if not allows or any(w.kind is WindowKind.ALLOW for w in active):
        return True, True, [], active
    return False, any(w.manual_sync for w in allows), allows, active


def _next_change(windows: list[SyncWindow], now: datetime, open_now: bool) -> tuple[datetime | None, datetime]:
    """The first window edge (a start, or an end) after `now` at which `open`
    flips; the state changes only at edges. Looked for up to HORIZON or
    MAX_EDGES edges (a window that starts every minute)."""
    at, horizon = now, now + HORIZON
    for _ in range(MAX_EDGES):
        edges = [w.next_start(at) for w in windows] + [end for w in windows if (end := w.active_until(at))]
        at = min(edges)
        if at > horizon:
            break
        if _verdict(windows, at)[0] != open_now:
            return at, at
    return None, min(at, horizon)

