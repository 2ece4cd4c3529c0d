"""The terminal view of a rollout, drawn with ``rich``.

One renderable per :class:`~agent.fleet.state.FleetSnapshot`: the summary line,
progress toward the target version overall and per platform, devices per model version
and phase, the devices with a problem (and their last error) and the silent ones. Lists
are cut to a few rows so the screen stays the same size for ten devices or ten
thousand; the numbers always count every device.
"""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from agent.fleet.state import DONE_PHASE, PROBLEM_PHASES, FleetSnapshot

#: Rows shown in the problem and silent lists.
LIST_ROWS = 12
#: Header rule only: fewer lines to redraw, and it reads well in a narrow terminal.
_BOX = box.SIMPLE_HEAD

_SHORT_PHASES = {
    "CHECKING": "checking",
    "PACKAGING_STARTED": "pkg started",
    "PACKAGING_RUNNING": "packaging",
    "PACKAGING_SUCCEEDED": "packaged",
    "PACKAGING_SKIPPED": "pkg skipped",
    "DEPLOYMENT_CREATED": "deploy created",
    "DEPLOYMENT_IN_PROGRESS": "deploying",
    "COMPONENT_RUNNING": "RUNNING",
    "PACKAGING_FAILED": "pkg FAILED",
    "DEPLOYMENT_FAILED": "deploy FAILED",
    "ROLLED_BACK": "ROLLED BACK",
    "ROLLOUT_FAILED": "FAILED",
    "HALTED": "HALTED",
    "NO_STATUS": "no status",
}


def duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _phase_style(phase: str) -> str:
    if phase == DONE_PHASE:
        return "green"
    if phase in PROBLEM_PHASES:
        return "bold red"
    return "yellow"


def _bar_row(label: str, done: int, total: int) -> tuple[Text, ProgressBar, Text]:
    share = 100.0 * done / total if total else 0.0
    bar = ProgressBar(total=max(total, 1), completed=done, width=40,
                      complete_style="green", finished_style="bold green")
    return Text(label), bar, Text(f"{done}/{total}  {share:5.1f} %")


def render(snapshot: FleetSnapshot, *, title: str = "l4v-edge fleet", elapsed: float | None = None) -> RenderableType:
    """The whole view of ``snapshot``."""
    parts: list[RenderableType] = []
    head = Text(title, style="bold")
    if elapsed is not None:
        head.append(f"   watching for {duration(elapsed)}", style="dim")
    parts.append(head)
    parts.append(Text(snapshot.summary(), style="bold cyan"))
    parts.append(_progress(snapshot))
    parts.append(_version_phase(snapshot))
    parts.append(_platforms(snapshot))
    if snapshot.problems:
        parts.append(_problems(snapshot))
    if snapshot.silent:
        parts.append(_silent(snapshot))
    if snapshot.unreadable:
        parts.append(Text(f"{snapshot.unreadable} unreadable message(s) ignored", style="dim"))
    return Group(*parts)


def _progress(snapshot: FleetSnapshot) -> Table:
    target = "the newest version" if snapshot.target_version is None else f"v{snapshot.target_version}"
    table = Table.grid(padding=(0, 2))
    table.title = f"progress toward {target}"
    table.title_justify = "left"
    table.add_column(min_width=20)
    table.add_column()
    table.add_column(justify="right")
    table.add_row(*_bar_row("all devices", snapshot.on_target, snapshot.devices))
    for row in snapshot.platforms:
        table.add_row(*_bar_row(row.platform, row.on_target, row.devices))
    return table


def _version_phase(snapshot: FleetSnapshot) -> Table:
    table = Table(title="devices per model version and latest phase", title_justify="left", box=_BOX)
    table.add_column("version", justify="right")
    for phase in snapshot.phases:
        table.add_column(_SHORT_PHASES.get(phase, phase), justify="right", style=_phase_style(phase))
    table.add_column("total", justify="right", style="bold")
    for version, counts in snapshot.by_version_phase.items():
        label = version if version == "-" else f"v{version}"
        cells = [str(counts[p]) if counts.get(p) else "" for p in snapshot.phases]
        table.add_row(label, *cells, str(sum(counts.values())))
    return table


def _platforms(snapshot: FleetSnapshot) -> Table:
    table = Table(title="per platform", title_justify="left", box=_BOX)
    table.add_column("platform")
    table.add_column("devices", justify="right")
    table.add_column("runs (version: devices)")
    table.add_column("on target", justify="right", style="green")
    table.add_column("in progress", justify="right", style="yellow")
    table.add_column("problems", justify="right", style="red")
    table.add_column("silent", justify="right", style="magenta")
    for row in snapshot.platforms:
        runs = "  ".join(
            f"{'none' if v == '-' else 'v' + v}: {n}" for v, n in reversed(row.versions.items())
        )
        table.add_row(
            row.platform, str(row.devices), runs, str(row.on_target), str(row.in_progress),
            str(row.problems or ""), str(row.silent or ""),
        )
    return table


def _problems(snapshot: FleetSnapshot) -> Table:
    total = len(snapshot.problems)
    table = Table(title=f"devices that need a look ({total})", title_justify="left", box=_BOX,
                  expand=True)
    table.add_column("device", no_wrap=True)
    table.add_column("platform", no_wrap=True)
    table.add_column("state", style="bold red", no_wrap=True, min_width=17)
    table.add_column("version", justify="right", no_wrap=True, min_width=7)
    table.add_column("last error", overflow="ellipsis", no_wrap=True, ratio=1)
    for p in snapshot.problems[:LIST_ROWS]:
        table.add_row(p.thing, p.platform, p.problem, "" if p.version is None else f"v{p.version}", p.error or "")
    if total > LIST_ROWS:
        table.caption = f"… and {total - LIST_ROWS} more (fleet report lists all)"
    return table


def _silent(snapshot: FleetSnapshot) -> Table:
    total = len(snapshot.silent)
    limit = duration(2 * snapshot.health_interval)
    table = Table(title=f"silent devices: no health for more than {limit} ({total})",
                  title_justify="left", min_width=60, box=_BOX)
    table.add_column("device", no_wrap=True)
    table.add_column("platform", no_wrap=True)
    table.add_column("silent for", justify="right", style="magenta")
    for s in snapshot.silent[:LIST_ROWS]:
        table.add_row(s.thing, s.platform, duration(s.silent_seconds))
    if total > LIST_ROWS:
        table.caption = f"… and {total - LIST_ROWS} more"
    return table
