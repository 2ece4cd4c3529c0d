"""The rollout report to share: one self-contained HTML page and ``fleet.json``.

The page needs no network to open: the style is inline and the plot (devices running
each model version over time, from the devices' own timestamps) is an embedded PNG
drawn with matplotlib. Every value from a device is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.fleet.state import (
    DONE_PHASE,
    PROBLEM_PHASES,
    DeviceView,
    FleetSnapshot,
)

HTML_NAME = "index.html"
JSON_NAME = "fleet.json"

_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.summary{font-size:16px;font-weight:600;color:#0b5cad;margin:6px 0 16px}
.muted{color:#667}
table{border-collapse:collapse;margin:6px 0 12px}
th,td{border:1px solid #d5d9e0;padding:3px 8px;text-align:left;vertical-align:top}
td{white-space:nowrap}td.err{white-space:normal;min-width:320px}
th{background:#f1f3f7;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;width:240px;height:12px;background:#e6e9ef;border-radius:3px;vertical-align:middle}
.bar>span{display:block;height:12px;background:#2e9d55;border-radius:3px}
.ok{color:#1e7a3e}.bad{color:#c0262d;font-weight:600}.warn{color:#a15c00}.silent{color:#8a2aa8}
img{max-width:100%;border:1px solid #e1e4ea}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def running_series(
    history: Sequence[tuple[float, str, int]],
) -> dict[int, list[tuple[float, int]]]:
    """Devices running each version over time: {version: [(time, devices), ...]}.

    ``history`` holds (device timestamp, thing, version it runs from then on); a device
    moving to a new version leaves the old one at the same moment.
    """
    current: dict[str, int] = {}
    counts: Counter[int] = Counter()
    series: dict[int, list[tuple[float, int]]] = {}
    for at, thing, version in sorted(history):
        previous = current.get(thing)
        if previous == version:
            continue
        if previous is not None:
            counts[previous] -= 1
            series[previous].append((at, counts[previous]))
        current[thing] = version
        counts[version] += 1
        series.setdefault(version, []).append((at, counts[version]))
    return dict(sorted(series.items()))


def plot_png(series: dict[int, list[tuple[float, int]]], *, until: float) -> bytes | None:
    """The running-per-version plot as PNG bytes (None when nothing ran yet)."""
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8.0, 3.2), dpi=100)
    try:
        for version, points in series.items():
            moments = [t for t, _ in points] + [max(until, points[-1][0])]
            times = mdates.date2num(  # type: ignore[no-untyped-call]
                [datetime.fromtimestamp(t, tz=timezone.utc) for t in moments]
            )
            values = [n for _, n in points]
            axes.step(times, [*values, values[-1]], where="post", label=f"v{version}")
        axes.set_ylabel("devices running")
        axes.set_xlabel("time (UTC)")
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))  # type: ignore[no-untyped-call]
        axes.grid(alpha=0.3)
        axes.legend(loc="center left", frameon=False)
        axes.set_ylim(bottom=0)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def fleet_json(
    snapshot: FleetSnapshot,
    devices: Sequence[DeviceView],
    series: dict[int, list[tuple[float, int]]],
) -> dict[str, Any]:
    """Everything the page shows, as JSON."""
    data = snapshot.to_json()
    data["schema"] = "l4v-edge-agent/fleet-report/1"
    data["runningOverTime"] = {
        str(v): [[round(t, 3), n] for t, n in points] for v, points in series.items()
    }
    data["deviceList"] = [
        {
            "thingName": d.thing,
            "platform": d.platform_key,
            "supported": d.supported,
            "runningVersion": d.running_version,
            "statusVersion": d.status_version,
            "phase": d.phase,
            "health": d.health,
            "lastError": d.last_error,
            "lastHealthAt": d.health_at,
        }
        for d in devices
    ]
    return data


def write_report(
    directory: Path,
    snapshot: FleetSnapshot,
    devices: Sequence[DeviceView],
    history: Sequence[tuple[float, str, int]],
    *,
    title: str = "l4v-edge fleet rollout",
) -> tuple[Path, Path]:
    """Write ``index.html`` and ``fleet.json`` into ``directory``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    series = running_series(history)
    png = plot_png(series, until=snapshot.at)
    page = render_html(snapshot, devices, png, title=title)
    html_path, json_path = directory / HTML_NAME, directory / JSON_NAME
    html_path.write_text(page, encoding="utf-8")
    json_path.write_text(json.dumps(fleet_json(snapshot, devices, series), indent=2) + "\n")
    return html_path, json_path


def render_html(
    snapshot: FleetSnapshot,
    devices: Sequence[DeviceView],
    plot: bytes | None,
    *,
    title: str,
) -> str:
    """The report page as one HTML string."""
    silent = {s.thing: s.silent_seconds for s in snapshot.silent}
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">as of {_e(_when(snapshot.at))}</p>',
        f'<p class="summary" id="summary">{_e(snapshot.summary())}</p>',
    ]
    out += _progress_table(snapshot)
    out.append("<h2>Devices running each model version</h2>")
    if plot is None:
        out.append('<p class="muted">No device reported a running model yet.</p>')
    else:
        data = base64.b64encode(plot).decode()
        out.append(
            f'<img id="running-plot" alt="devices running per model version over time" '
            f'src="data:image/png;base64,{data}">'
        )
    out += _version_phase_table(snapshot)
    if snapshot.problems:
        out.append(f"<h2>Devices that need a look ({len(snapshot.problems)})</h2>")
        out.append('<table id="problems"><tr><th>device</th><th>platform</th><th>state</th>'
                   "<th>version</th><th>last error</th><th>since</th></tr>")
        for p in snapshot.problems:
            out.append(
                f"<tr><td>{_e(p.thing)}</td><td>{_e(p.platform)}</td>"
                f'<td class="bad">{_e(p.problem)}</td>'
                f'<td class="n">{_e("" if p.version is None else f"v{p.version}")}</td>'
                f'<td class="err">{_e(p.error)}</td><td>{_e(_when(p.since))}</td></tr>'
            )
        out.append("</table>")
    if snapshot.silent:
        out.append(
            f"<h2>Silent devices ({len(snapshot.silent)}): no health for more than "
            f"{2 * snapshot.health_interval:g} s</h2>"
        )
        out.append('<table id="silent"><tr><th>device</th><th>platform</th><th>silent for</th>'
                   "<th>last health</th></tr>")
        for s in snapshot.silent:
            out.append(
                f"<tr><td>{_e(s.thing)}</td><td>{_e(s.platform)}</td>"
                f'<td class="n silent">{s.silent_seconds:.0f} s</td>'
                f"<td>{_e(_when(s.last_health_at) or 'never')}</td></tr>"
            )
        out.append("</table>")
    out += _platform_sections(snapshot, devices, silent)
    out.append(
        f'<p class="muted">{snapshot.messages} messages read, {snapshot.duplicates} duplicates, '
        f"{snapshot.unreadable} unreadable. Written by <code>python -m agent fleet</code>.</p>"
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _progress_table(snapshot: FleetSnapshot) -> list[str]:
    target = "the newest version" if snapshot.target_version is None else f"v{snapshot.target_version}"
    rows = [f"<h2>Progress toward {_e(target)}</h2>", '<table id="progress">',
            "<tr><th>platform</th><th>devices</th><th>on target</th><th></th><th>in progress</th>"
            "<th>problems</th><th>silent</th></tr>"]
    entries = [("all devices", snapshot.devices, snapshot.on_target, snapshot.in_progress,
                len(snapshot.problems), len(snapshot.silent))]
    entries += [(p.platform, p.devices, p.on_target, p.in_progress, p.problems, p.silent)
                for p in snapshot.platforms]
    for name, total, done, progress, problems, silent in entries:
        share = 100.0 * done / total if total else 0.0
        rows.append(
            f"<tr><td>{_e(name)}</td><td class='n'>{total}</td><td class='n'>{done} ({share:.0f} %)</td>"
            f'<td><span class="bar"><span style="width:{share:.1f}%"></span></span></td>'
            f"<td class='n'>{progress}</td><td class='n'>{problems}</td><td class='n'>{silent}</td></tr>"
        )
    rows.append("</table>")
    return rows


def _version_phase_table(snapshot: FleetSnapshot) -> list[str]:
    rows = ["<h2>Devices per model version and latest phase</h2>", '<table id="version-phase">',
            "<tr><th>version</th>" + "".join(f"<th>{_e(p)}</th>" for p in snapshot.phases)
            + "<th>total</th></tr>"]
    for version, counts in snapshot.by_version_phase.items():
        label = version if version == "-" else f"v{version}"
        cells = "".join(f"<td class='n'>{counts.get(p, '')}</td>" for p in snapshot.phases)
        rows.append(f"<tr><td>{_e(label)}</td>{cells}<td class='n'>{sum(counts.values())}</td></tr>")
    rows.append("</table>")
    return rows


def _platform_sections(
    snapshot: FleetSnapshot, devices: Sequence[DeviceView], silent: dict[str, float]
) -> list[str]:
    out: list[str] = []
    by_platform: dict[str, list[DeviceView]] = {}
    for d in devices:
        by_platform.setdefault(d.platform_key or "unknown", []).append(d)
    target = snapshot.target_version
    for platform, members in sorted(by_platform.items()):
        slug = "".join(c if c.isalnum() else "-" for c in platform)
        out.append(f'<h2 id="platform-{_e(slug)}">Platform {_e(platform)} ({len(members)} devices)</h2>')
        out.append(f'<table class="platform" data-platform="{_e(platform)}">'
                   "<tr><th>device</th><th>runs</th><th>latest phase</th><th>of version</th>"
                   "<th>health</th><th>last error</th></tr>")
        members.sort(key=lambda d: (d.problem is None, d.thing not in silent, d.thing))
        for d in members:
            runs = "" if d.running_version is None else f"v{d.running_version}"
            on_target = target is not None and (d.running_version or 0) >= target
            phase_class = "ok" if d.phase == DONE_PHASE else "bad" if d.phase in PROBLEM_PHASES else "warn"
            health = d.health or ""
            if d.thing in silent:
                health = f"silent {silent[d.thing]:.0f} s"
            out.append(
                f"<tr><td>{_e(d.thing)}</td><td class='{'ok' if on_target else ''}'>{_e(runs)}</td>"
                f"<td class='{phase_class}'>{_e(d.phase or '')}</td>"
                f"<td class='n'>{_e('' if d.status_version is None else f'v{d.status_version}')}</td>"
                f"<td class='{'silent' if d.thing in silent else ''}'>{_e(health)}</td>"
                f"<td class='err'>{_e(d.last_error or '')}</td></tr>"
            )
        out.append("</table>")
    return out
