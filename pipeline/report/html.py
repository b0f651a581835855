"""Render `ReportData` as one static HTML page (inline CSS and JS, images as relative files).

The page opens from disk with no server and makes no network request: styles and the table
sorter are inline, images are files under ``img/`` beside ``index.html``, and the time lines
are inline SVG. Tables sort on a click of their header (numbers numerically); the layout is
one column on a phone and the tables scroll sideways when they do not fit.
"""

from __future__ import annotations

import datetime
import html
import math
from typing import Any

from .collect import AmpRow, DetectorSection, ReportData, RunEntry

__all__ = ["render_html"]

_CSS = """
:root{--fg:#1d2329;--muted:#5b6670;--line:#d7dde2;--bg:#fff;--alt:#f4f6f8;--ok:#1a7f37;--bad:#c62828;
--accent:#1f5f99}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header,main,footer{max-width:1200px;margin:0 auto;padding:0 16px}
header{padding-top:12px}
h1{font-size:1.5em;margin:.4em 0}h2{font-size:1.25em;margin:1.4em 0 .4em;border-bottom:2px solid var(--line)}
h3{font-size:1.05em;margin:1.1em 0 .3em}
nav{display:flex;flex-wrap:wrap;gap:6px 14px;font-size:.95em}
a{color:var(--accent)}
.muted{color:var(--muted);font-size:.9em}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.4em 0}
table{border-collapse:collapse;font-size:.9em;min-width:100%}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{background:var(--alt);position:sticky;top:0;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" \\25B2";font-size:.7em}th.sorted-desc::after{content:" \\25BC";font-size:.7em}
td.l,th.l{text-align:left}td.msg{text-align:left;white-space:normal;min-width:18em}
tbody tr:nth-child(even){background:#fafbfc}
.ok{color:var(--ok)}.bad{color:var(--bad);font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.grid.plots{grid-template-columns:repeat(auto-fill,minmax(360px,1fr))}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:6px;background:#fff}
figure img{display:block;width:100%;height:auto;image-rendering:auto}
figcaption{font-size:.8em;color:var(--muted);margin-top:4px;word-break:break-word}
svg.timeline{width:100%;height:auto;display:block;font:11px system-ui,sans-serif}
details{margin:.3em 0}summary{cursor:pointer}
@media (max-width:640px){body{font-size:14px}.grid,.grid.plots{grid-template-columns:1fr}
th,td{padding:3px 5px}}
"""

_JS = """
(function(){
  function key(td){var v=td.getAttribute('data-sort');if(v===null)v=td.textContent.trim();
    var n=parseFloat(v);return (v!==''&&!isNaN(n)&&isFinite(v))?[0,n]:[1,v.toLowerCase()];}
  function cmp(a,b){if(a[0]!==b[0])return a[0]-b[0];return a[1]<b[1]?-1:a[1]>b[1]?1:0;}
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads=table.tHead?table.tHead.rows[table.tHead.rows.length-1].cells:[];
    Array.prototype.forEach.call(heads,function(th,col){
      th.setAttribute('title','sort');
      th.addEventListener('click',function(){
        var asc=!th.classList.contains('sorted-asc');
        Array.prototype.forEach.call(heads,function(h){h.classList.remove('sorted-asc','sorted-desc');});
        th.classList.add(asc?'sorted-asc':'sorted-desc');
        var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(r1,r2){var c=cmp(key(r1.cells[col]),key(r2.cells[col]));return asc?c:-c;});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
})();
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float, fmt: str = ".3f") -> str:
    return format(value, fmt) if isinstance(value, float | int) and math.isfinite(value) else "–"


def _sort(value: float) -> str:
    return repr(float(value)) if isinstance(value, float | int) and math.isfinite(value) else ""


def _td(text: str, sort: str | None = None, cls: str = "") -> str:
    attrs = f' data-sort="{_e(sort)}"' if sort is not None else ""
    attrs += f' class="{cls}"' if cls else ""
    return f"<td{attrs}>{text}</td>"


def _anchor(section: DetectorSection) -> str:
    return f"{section.instrument}-det{section.detector}".replace("/", "_").replace(" ", "_")


def _amp_table(section: DetectorSection) -> str:
    has_defects = any(r.defects is not None for r in section.amps)
    has_lin = any(r.linearity for r in section.amps)
    has_verify = any(r.verification for r in section.amps)
    heads = [
        ("l", "amp"),
        ("", "PTC gain<br><span class=muted>e⁻/ADU</span>"),
        ("", "±"),
        ("", "nominal gain<br><span class=muted>e⁻/ADU</span>"),
        ("", "ratio"),
        ("", "PTC read noise<br><span class=muted>e⁻</span>"),
        ("", "nominal noise<br><span class=muted>e⁻</span>"),
        ("", "overscan level<br><span class=muted>ADU</span>"),
        ("", "overscan noise<br><span class=muted>e⁻</span>"),
        ("", "ISR frames"),
    ]
    if has_defects:
        heads.append(("", "defects"))
    if has_lin:
        heads.append(("l", "linearity"))
    if has_verify:
        heads.append(("l", "verification"))
    out = [
        f'<div class="scroll"><table class="sortable amps" id="amps-{_e(_anchor(section))}" '
        f'data-instrument="{_e(section.instrument)}" data-detector="{section.detector}">',
        "<thead><tr>" + "".join(f'<th class="{c}">{h}</th>' for c, h in heads) + "</tr></thead><tbody>",
    ]
    for r in section.amps:
        out.append(_amp_row(r, has_defects, has_lin, has_verify))
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _amp_row(r: AmpRow, has_defects: bool, has_lin: bool, has_verify: bool) -> str:
    ratio = r.gain / r.nominal_gain if math.isfinite(r.gain) and r.nominal_gain else math.nan
    ratio_cls = "" if not math.isfinite(ratio) else ("ok" if abs(ratio - 1) <= 0.1 else "bad")
    if math.isfinite(r.noise):
        noise = (
            _num(r.noise, ".2f")
            if r.noise_constrained
            else '<span title="not constrained: no flat near the noise floor">n/c</span>'
        )
    else:
        noise = "–"
    cells = [
        _td(_e(r.amp), r.amp, "l"),
        _td(_num(r.gain), _sort(r.gain)),
        _td(_num(r.gain_err), _sort(r.gain_err)),
        _td(_num(r.nominal_gain, ".2f"), _sort(r.nominal_gain)),
        _td(_num(ratio), _sort(ratio), ratio_cls),
        _td(noise, _sort(r.noise if r.noise_constrained else math.nan)),
        _td(_num(r.nominal_noise, ".2f"), _sort(r.nominal_noise)),
        _td(_num(r.overscan_level, ".1f"), _sort(r.overscan_level)),
        _td(_num(r.overscan_noise, ".2f"), _sort(r.overscan_noise)),
        _td(str(r.n_isr), str(r.n_isr)),
    ]
    if has_defects:
        cells.append(
            _td("–" if r.defects is None else str(r.defects), "" if r.defects is None else str(r.defects))
        )
    if has_lin:
        cells.append(_td(_e(r.linearity or "–"), r.linearity, "l"))
    if has_verify:
        cls = "l bad" if "FAIL" in r.verification else "l ok" if r.verification else "l"
        cells.append(_td(_e(r.verification or "–"), r.verification, cls))
    return (
        f'<tr data-amp="{_e(r.amp)}" data-gain="{_sort(r.gain)}" data-noise="{_sort(r.noise)}">'
        + "".join(cells)
        + "</tr>"
    )


def _parse(iso: str | None) -> datetime.datetime | None:
    if not iso:
        return None
    try:
        return datetime.datetime.fromisoformat(iso.replace("Z", ""))
    except ValueError:
        return None


def _timeline(section: DetectorSection) -> str:
    """Inline SVG: one row per calibration type, its validity ranges as bars; exposures as ticks."""
    if not section.calibs and not section.exposures:
        return ""
    times = [t for c in section.calibs for t in (_parse(c.begin), _parse(c.end)) if t is not None]
    times += [t for t in (_parse(e[0]) for e in section.exposures) if t is not None]
    if times:
        lo, hi = min(times), max(times)
    else:
        lo = hi = datetime.datetime(2000, 1, 1)
    span = (hi - lo).total_seconds()
    pad = datetime.timedelta(seconds=max(span * 0.08, 3600.0))
    lo, hi = lo - pad, hi + pad
    total = (hi - lo).total_seconds()
    types = sorted({c.dataset_type for c in section.calibs})
    rows = types + (["exposures"] if section.exposures else [])
    width, left, row_h = 1000, 110, 26
    height = 30 + row_h * len(rows) + 20

    def x(t: datetime.datetime | None, default: float) -> float:
        if t is None:
            return default
        return left + (width - left - 10) * (t - lo).total_seconds() / total

    parts = [
        f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="validity ranges of the certified calibrations of {_e(section.instrument)} '
        f'detector {section.detector}">'
    ]
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for i, name in enumerate(rows):
        y = 20 + i * row_h
        parts.append(f'<text x="4" y="{y + 16}">{_e(name)}</text>')
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y + 12}" y2="{y + 12}" stroke="#e3e7ea"/>')
        if name == "exposures":
            for iso, kind in section.exposures:
                xx = x(_parse(iso), left)
                col = {"science": "#111", "flat": "#2ca02c", "bias": "#1f77b4", "dark": "#555"}.get(
                    kind, "#999"
                )
                parts.append(
                    f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{y + 3}" y2="{y + 21}" stroke="{col}">'
                    f"<title>{_e(kind)} {_e(iso)}</title></line>"
                )
            continue
        for c in (c for c in section.calibs if c.dataset_type == name):
            x0 = x(_parse(c.begin), left)
            x1 = x(_parse(c.end), width - 10)
            col = colors[types.index(name) % len(colors)]
            parts.append(
                f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 2):.1f}" height="16" rx="3" '
                f'fill="{col}" fill-opacity="0.55" stroke="{col}"><title>{_e(name)} '
                f"{_e(c.begin or '-inf')} … {_e(c.end or '+inf')} in {_e(c.collection)} "
                f"(run {_e(c.run)})</title></rect>"
            )
            if c.begin is None:
                parts.append(f'<text x="{left + 2}" y="{y + 16}" fill="#fff">◀ −∞</text>')
            if c.end is None:
                parts.append(f'<text x="{width - 40}" y="{y + 16}" fill="#fff">+∞ ▶</text>')
    yb = 20 + row_h * len(rows) + 12
    for frac in (0.0, 0.5, 1.0):
        t = lo + datetime.timedelta(seconds=total * frac)
        xx = left + (width - left - 10) * frac
        anchor = "start" if frac == 0 else "end" if frac == 1 else "middle"
        parts.append(
            f'<text x="{xx:.1f}" y="{yb}" text-anchor="{anchor}" fill="#5b6670">'
            f"{t.strftime('%Y-%m-%d %H:%M')} TAI</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _calib_table(section: DetectorSection) -> str:
    if not section.calibs:
        return '<p class="muted">No certified calibration in the collections searched.</p>'
    out = [
        '<div class="scroll"><table class="sortable calibs"><thead><tr><th class="l">type</th>'
        '<th class="l">valid from (TAI)</th><th class="l">valid until (TAI)</th><th class="l">collection</th>'
        '<th class="l">run</th></tr></thead><tbody>'
    ]
    for c in section.calibs:
        out.append(
            "<tr>"
            + _td(_e(c.dataset_type), c.dataset_type, "l")
            + _td(_e(c.begin or "−∞"), c.begin or "", "l")
            + _td(_e(c.end or "+∞"), c.end or "~", "l")
            + _td(_e(c.collection), None, "l")
            + _td(_e(c.run), None, "l")
            + "</tr>"
        )
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _figures(section: DetectorSection, kind: str, cls: str = "grid") -> str:
    imgs = [i for i in section.images if i.kind == kind]
    if not imgs:
        return ""
    return (
        f'<div class="{cls}">'
        + "".join(
            f'<figure><a href="{_e(i.path)}"><img src="{_e(i.path)}" alt="{_e(i.title)}"></a>'
            f"<figcaption>{_e(i.title)}</figcaption></figure>"
            for i in imgs
        )
        + "</div>"
    )


def _run_section(run: RunEntry) -> str:
    s = run.summary
    rows = s.quantum_rows()
    n_failed = sum(r["Failed"] for r in rows)
    n_blocked = sum(r["Blocked"] for r in rows)
    state = (
        f'<span class="bad">{n_failed} failed, {n_blocked} blocked</span>'
        if n_failed or n_blocked
        else '<span class="ok">all succeeded</span>'
    )
    cols = ["Task", "Unknown", "Successful", "Caveats", "Blocked", "Failed", "Wonky", "TOTAL", "EXPECTED"]
    out = [
        f"<details{' open' if n_failed or n_blocked else ''}><summary><b>{_e(run.name)}</b> — "
        f"{sum(r['Successful'] for r in rows)} of {sum(r['EXPECTED'] for r in rows)} quanta succeeded; "
        f"{state}</summary>",
        '<div class="scroll"><table class="sortable quanta"><thead><tr>'
        + "".join(f'<th class="{"l" if c in ("Task", "Caveats") else ""}">{c}</th>' for c in cols)
        + "</tr></thead><tbody>",
    ]
    for r in rows:
        out.append(
            "<tr>"
            + "".join(
                _td(
                    _e(r[c]),
                    str(r[c]),
                    "l"
                    if c in ("Task", "Caveats")
                    else ("bad" if c in ("Failed", "Blocked") and r[c] else ""),
                )
                for c in cols
            )
            + "</tr>"
        )
    out.append("</tbody></table></div>")
    bad = s.bad_quantum_rows(max_message_width=0)
    for label, brows in bad.items():
        out.append(f"<h4>{_e(label)} failures</h4>")
        keys = [k for k in brows[0] if k not in ("Status(Caveats)", "Message")]
        out.append(
            '<div class="scroll"><table class="sortable failures"><thead><tr><th class="l">status</th>'
            + "".join(f"<th>{_e(k)}</th>" for k in keys)
            + '<th class="l">message</th></tr></thead><tbody>'
        )
        for br in brows:
            out.append(
                "<tr>"
                + _td(_e(br["Status(Caveats)"]), None, "l bad")
                + "".join(_td(_e(br.get(k, "")), str(br.get(k, ""))) for k in keys)
                + _td(_e(br["Message"]), None, "msg")
                + "</tr>"
            )
        out.append("</tbody></table></div>")
    for note in s.notes:
        out.append(f'<p class="muted">{_e(note)}</p>')
    out.append("</details>")
    return "\n".join(out)


def render_html(data: ReportData, title: str = "ccdflow calibration report") -> str:
    """Return the report page.

    Parameters
    ----------
    data : `ReportData`
        What `collect_report` gathered (its image paths are relative to the page).
    title : `str`
        Page title.

    Returns
    -------
    html : `str`
        A complete, self-contained HTML document (no external resource).
    """
    nav = " ".join(
        f'<a href="#{_e(_anchor(s))}">{_e(s.instrument)} det {s.detector}</a>' for s in data.sections
    )
    if data.runs:
        nav += ' <a href="#runs">runs</a>'
    body = [
        f"<header><h1>{_e(title)}</h1>",
        f'<p class="muted">Repository <code>{_e(data.repo)}</code> · collections '
        f"<code>{_e(', '.join(data.collections))}</code> · made {_e(data.created)}</p>",
        f"<nav>{nav}</nav></header><main>",
    ]
    insts: dict[str, list[DetectorSection]] = {}
    for s in data.sections:
        insts.setdefault(s.instrument, []).append(s)
    for inst, sections in insts.items():
        body.append(f"<h2>{_e(inst)}</h2>")
        for s in sections:
            body.append(f'<section id="{_e(_anchor(s))}">')
            body.append(
                f"<h3>{_e(inst)} detector {s.detector}" + (f" ({_e(s.name)})" if s.name else "") + "</h3>"
            )
            body.append("<h4>Certified calibrations</h4>")
            body.append(_timeline(s))
            body.append(_calib_table(s))
            body.append("<h4>Amplifiers</h4>")
            if s.ptc_source:
                body.append(
                    f'<p class="muted">PTC gain and read noise from the ptc in {_e(s.ptc_source)}; '
                    "overscan level and noise (residual rms × gain) from the headers of the "
                    "ISR outputs of science exposures; nominal values from the camera description.</p>"
                )
            body.append(_amp_table(s) if s.amps else '<p class="muted">No amplifier data.</p>')
            plots = _figures(s, "plot", "grid plots")
            if plots:
                body += ["<h4>PTC, linearity and covariance plots</h4>", plots]
            calibs = _figures(s, "calib")
            if calibs:
                body += ["<h4>Combined calibrations</h4>", calibs]
            isr = _figures(s, "isr")
            if isr:
                body += ["<h4>ISR outputs</h4>", isr]
            body.append("</section>")
    if data.runs:
        body.append(
            '<h2 id="runs">Runs</h2><p class="muted">Quanta per task as <code>pipetask report</code> '
            "counts them (Unknown: not attempted).</p>"
        )
        body += [_run_section(r) for r in data.runs]
    if not data.sections and not data.runs:
        body.append("<p>Nothing to show: no calibration, ISR output or run in these collections.</p>")
    body.append(
        '</main><footer><p class="muted">Written by ccdflow-report; a static page: it needs no '
        "server and loads nothing from the network.</p></footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<script>{_JS}</script></body></html>\n"
    )
