"""`vitrine eval ... --report DIR`: one static HTML page (DIR/index.html) with PNG plots and product thumbnails, drawn
from the same report dict the command prints as JSON (also saved as DIR/report.json).

Only this module imports matplotlib, lazily, and draws with the Agg canvas (no pyplot, no global backend). Thumbnails
are read by id from the evaluated catalogs, streaming, decoding only the products a picture shows.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vitrine import __version__
from vitrine.data.catalog import open_catalog
from vitrine.errors import AlreadyExists, InvalidInput

KINDS = ("zero-shot", "retrieval", "composed", "attributes")
THUMB_PIXELS = 160  # longest side of a thumbnail
DPI = 100
HEADLINES = {
    "zero-shot": ("top1", "top5", "macro_f1", "weighted_f1", "seen_top1", "unseen_top1", "H", "n", "classes"),
    "retrieval": ("R@1", "R@5", "R@10", "MRR", "n_queries", "gallery_size"),
    "composed": (
        "R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "average", "n_queries", "gallery_size",
    ),
    "attributes": ("mean_precision", "mean_top1", "n_items"),
}


@dataclass(frozen=True)
class Thumb:
    """A product's thumbnail file (relative to the report folder) and title."""

    src: str
    title: str | None


def check_report_folder(out: str | os.PathLike) -> Path:
    """`out` as a Path, refused when something other than a folder is there (checked before an evaluation starts)."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise AlreadyExists(f"--report {folder}: a file is there, not a folder; give a folder to write the report into")
    return folder


def report_folder(out: str | os.PathLike) -> Path:
    """The report folder, created when missing; an existing folder is written into (its files replaced)."""
    folder = check_report_folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def safe_name(item_id: str) -> str:
    """A file name for an id: letters, digits, '-' and '_' kept; anything else replaced, with a digest of the id
    appended so that two ids never share a file."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", item_id)[:80]
    if name != item_id or not name:
        name += "-" + hashlib.sha1(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return name


def thumbnails(
    ids: Iterable[str], catalogs: Sequence[str], folder: Path, schema=None, progress: bool = True
) -> dict[str, Thumb]:
    """Thumbnails of `ids` saved as folder/thumbs/<safe id>.jpg, read from the first of `catalogs` that has each id
    (streaming each catalog once, decoding only the wanted rows); ids found nowhere (or whose image is bad) are left
    out."""
    from tqdm import tqdm

    wanted = set(ids)
    found: dict[str, Thumb] = {}
    if not wanted:
        return found
    (folder / "thumbs").mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(wanted), desc="thumbnails", unit="image", disable=not progress) as bar:
        for path in dict.fromkeys(catalogs):
            if not wanted:
                break
            reader = open_catalog(path, schema=schema, on_error="skip", require_title=False)
            for record in reader.records():
                if record.id not in wanted:
                    continue
                wanted.discard(record.id)
                item = reader.decode_or_skip(record)
                if item is not None:
                    image = item.image  # decoded for this alone: shrunk in place
                    image.thumbnail((THUMB_PIXELS, THUMB_PIXELS))
                    src = f"thumbs/{safe_name(record.id)}.jpg"
                    image.convert("RGB").save(folder / src, format="JPEG", quality=85)
                    found[record.id] = Thumb(src, record.title)
                bar.update(1)
                if not wanted:
                    break
    return found


def write_report(
    kind: str, report: dict, out: str | os.PathLike, catalogs: Sequence[str] = (), schema=None,
    command: str | None = None, progress: bool = True,
) -> Path:
    """Write DIR/index.html, its plots and thumbnails, and DIR/report.json for a `vitrine eval <kind>` report; returns
    the page's path. `catalogs` are where the products the page shows are read from (retrieval, composed)."""
    if kind not in KINDS:
        raise InvalidInput(f"no report for {kind!r}; one of {', '.join(KINDS)}")
    folder = report_folder(out)
    (folder / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    body = _BODIES[kind](report, folder, catalogs, schema, progress)
    page = _page(kind, report, body, command)
    (folder / "index.html").write_text(page, encoding="utf-8")
    return folder / "index.html"


# --- HTML ---------------------------------------------------------------------------------------------------------

STYLE = """
body {
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
  margin: 0;
  color: #1d232a;
  background: #f6f7f9;
}
header { background: #1d232a; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 6px; font-size: 22px; }
header code { color: #c9d4e0; font-size: 13px; word-break: break-all; }
header .about { color: #c9d4e0; margin-top: 4px; }
main { padding: 8px 28px 40px; max-width: 1400px; }
section { background: #fff; border: 1px solid #e1e5ea; border-radius: 8px; padding: 14px 18px; margin: 18px 0; }
h2 { font-size: 18px; margin: 0 0 10px; }
.figures { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 12px; }
.figure { background: #2b333c; border-radius: 6px; padding: 6px 12px; min-width: 86px; }
.figure b { display: block; font-size: 20px; }
.figure span { font-size: 12px; color: #b9c3ce; }
.note { color: #5b6570; }
img.plot { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border-bottom: 1px solid #e6e9ed; padding: 4px 10px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.example {
  display: flex;
  flex-wrap: wrap;
  gap: 8px 12px;
  align-items: flex-start;
  padding: 10px 0;
  border-bottom: 1px solid #eceff2;
}
.example:last-child { border-bottom: none; }
.lead, .results { display: flex; gap: 8px; align-items: flex-start; }
.query { width: 180px; flex: none; }
.query .text { font-weight: 600; overflow-wrap: anywhere; margin-bottom: 4px; }
.arrow { align-self: center; font-size: 22px; color: #8a949e; }
.card { width: 120px; flex: none; font-size: 12px; border: 2px solid transparent; border-radius: 6px; padding: 3px; }
.card img, .card .missing {
  width: 112px;
  height: 112px;
  object-fit: contain;
  background: #fff;
  border: 1px solid #e6e9ed;
  border-radius: 4px; display: block; box-sizing: border-box; }
.card .missing { display: flex; align-items: center; justify-content: center; color: #8a949e; text-align: center; }
.card .caption {
  overflow: hidden;
  display: -webkit-box;
  -webkit-line-clamp: 3;
  -webkit-box-orient: vertical;
  overflow-wrap: anywhere;
}
.card .id { color: #5b6570; }
.card.target { border-color: #2f9e44; background: #ebfbee; }
.card.given { border-color: #4c6ef5; background: #edf2ff; }
.tag {
  display: inline-block;
  font-size: 11px;
  font-weight: 600;
  padding: 0 5px;
  border-radius: 3px;
  background: #2f9e44;
  color: #fff;
}
.tag.miss { background: #e03131; }
.tag.info { background: #4c6ef5; }
footer { color: #8a949e; font-size: 12px; padding: 0 28px 24px; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _page(kind: str, report: dict, body: list[str], command: str | None) -> str:
    figures = "".join(
        f'<div class="figure"><b>{_e(_fmt(report[k]))}</b><span>{_e(k)}</span></div>'
        for k in HEADLINES[kind]
        if _scalar(report.get(k))
    )
    extra = [
        f"{name}: {_fmt(report[name])}"
        for name in ("field", "split", "model", "combiner", "pooling", "calibrated_on")
        if _scalar(report.get(name))
    ]
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>vitrine eval {_e(kind)} report</title>",
            f"<style>{STYLE}</style></head><body>",
            f"<header><h1>vitrine eval {_e(kind)}</h1>",
            f"<code>{_e(command)}</code>" if command else "",
            f'<div class="about">{_e(" · ".join(extra))}</div>' if extra else "",
            f'<div class="figures">{figures}</div></header>',
            "<main>",
            *body,
            "</main>",
            f"<footer>vitrine {_e(__version__)}. Every figure on this page comes from <a "
            'href="report.json">report.json</a>, '
            "the JSON the command prints with --json.</footer>",
            "</body></html>",
            "",
        ]
    )


def _scalar(value) -> bool:
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _fmt(value) -> str:
    """A figure exactly as the JSON writes it (None as an empty cell)."""
    return "" if value is None else str(value)


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{''.join(parts)}</section>"


def _img(src: str, alt: str, css: str = "plot") -> str:
    return f'<img class="{css}" src="{_e(src)}" alt="{_e(alt)}">'


NUM = ' class="num"'


def _table(header: Sequence[str], rows: Iterable[Sequence], numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(header)
    head = "".join(f"<th{NUM if n else ''}>{_e(h)}</th>" for h, n in zip(header, numeric))
    body = "".join(
        "<tr>" + "".join(f"<td{NUM if n else ''}>{_e(_fmt(v))}</td>" for v, n in zip(row, numeric)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


SECTION_TITLES = {
    "by_kind": "Per triplet kind", "categories": "Per category", "image_to_text": "Image → title",
    "skipped": "Skipped triplets",
}


def _nested_tables(report: dict) -> list[str]:
    """A table for each dict of dicts (by_kind, categories) and each flat dict of figures (image_to_text, skipped)."""
    out = []
    for key, value in report.items():
        if (
            not isinstance(value, dict)
            or not value
            or key in ("per_class", "per_attribute", "calibration", "confusion", "examples")
        ):
            continue
        if all(isinstance(v, dict) for v in value.values()):
            columns = list(dict.fromkeys(c for v in value.values() for c, x in v.items() if _scalar(x)))
            rows = [[name, *(v.get(c, "") for c in columns)] for name, v in value.items()]
            out.append(
                _section(SECTION_TITLES.get(key, key), _table([key, *columns], rows, [False, *[True] * len(columns)]))
            )
        elif all(_scalar(v) or v is None for v in value.values()):
            out.append(
                _section(
                    SECTION_TITLES.get(key, key),
                    _table(["figure", "value"], [[k, v] for k, v in value.items()], [False, True]),
                )
            )
    return out


def _card(item_id: str, thumbs: dict[str, Thumb], label: str = "", css: str = "") -> str:
    thumb = thumbs.get(item_id)
    title = thumb.title if thumb and thumb.title else ""
    alt = f"product {item_id}" + (f": {title}" if title else "")
    picture = _img(thumb.src, alt, "thumb") if thumb else f'<div class="missing">no image for id {_e(item_id)}</div>'
    return (
        f'<div class="card {css}" title="{_e(title)}">{picture}{label}'
        f'<div class="caption"><span class="id">{_e(item_id)}</span> {_e(title)}</div></div>'
    )


# --- plots --------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, folder: Path, name: str) -> str:
    figure.savefig(folder / name, format="png", dpi=DPI, metadata={"Software": None})
    return name


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _confusion_plot(confusion: dict, per_class: dict, field: str, folder: Path) -> str:
    """The counts among the most confused values, and a last column (from per_class's n) for each row's mistakes
    into the values not shown, so that every row adds up to its class's n."""
    import numpy as np
    from matplotlib.patches import Rectangle

    classes, counts = (
        confusion["classes"],
        np.array(confusion["counts"], dtype=float).reshape(len(confusion["classes"]), -1),
    )
    size = len(classes)
    other = [per_class.get(c, {}).get("n", 0) - int(counts[i].sum()) for i, c in enumerate(classes)]
    figure = _figure(max(5.5, 0.62 * (size + 1) + 3.2), max(4.5, 0.5 * size + 2.4))
    ax = figure.add_subplot()
    off = np.concatenate([counts, np.array(other, dtype=float).reshape(-1, 1)], axis=1)
    np.fill_diagonal(off, np.nan)
    top = max(1.0, float(np.nanmax(off[:, :size])) if size > 1 else 1.0)
    shown = ax.imshow(
        np.ma.masked_invalid(off[:, :size]), cmap="Reds", vmin=0, vmax=top, aspect="auto",
        extent=(-0.5, size - 0.5, size - 0.5, -0.5),
    )
    for i in range(size):
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, facecolor="#d3f0d8", edgecolor="none"))
        ax.add_patch(Rectangle((size - 0.5, i - 0.5), 1, 1, facecolor="#eceff2", edgecolor="white"))
    for i in range(size):
        for j in range(size + 1):
            value = int(counts[i, j]) if j < size else other[i]
            if value:
                dark = i != j and j < size and value > 0.55 * top
                ax.text(j, i, str(value), ha="center", va="center", fontsize=8, color="white" if dark else "#1d232a")
    ax.set_xlim(-0.5, size + 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    labels = [_short(c) for c in classes]
    ax.set_xticks(
        range(size + 1), [*labels, "(any other)"], rotation=50, ha="right", rotation_mode="anchor", fontsize=9
    )
    ax.set_yticks(range(size), labels, fontsize=9)
    ax.set_xlabel(f"predicted {field}")
    ax.set_ylabel(f"true {field}")
    ax.set_title(
        f"The {size} most confused {field} values (green: correct; grey: mistakes into values not shown)", fontsize=11
    )
    figure.colorbar(shown, ax=ax, shrink=0.7, label="mistakes")
    return _save(figure, folder, "confusion.png")


def _per_class_plot(per_class: dict, field: str, top1, folder: Path) -> str:
    from matplotlib import colormaps

    rows = sorted(
        ((v["correct"] / v["n"], v["n"], name) for name, v in per_class.items() if v["n"]),
        key=lambda r: (-r[0], -r[1], r[2]),
    )
    figure = _figure(8.5, 0.24 * len(rows) + 1.3)
    ax = figure.add_subplot()
    positions = range(len(rows))
    colours = colormaps["RdYlGn"]([0.1 + 0.8 * r[0] for r in rows])
    ax.barh(positions, [r[0] for r in rows], color=colours, height=0.75)
    ax.set_yticks(positions, [f"{_short(r[2], 32)} (n={r[1]})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_ylim(len(rows) - 0.5, -0.5)
    for y, (accuracy, _, _) in enumerate(rows):
        ax.text(min(accuracy, 1.0) + 0.01, y, f"{accuracy:.0%}", va="center", fontsize=7)
    ax.set_xlim(0, 1.1)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    ax.set_xlabel("top-1 accuracy")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(
        f"Top-1 accuracy per {field} ({len(rows)} classes; overall top1 {_fmt(top1)})", fontsize=11, loc="left"
    )
    return _save(figure, folder, "per_class.png")


def _grouped_bars(
    groups: Sequence[str], series: dict[str, Sequence[float]], title: str, folder: Path, name: str, ylabel: str = ""
) -> str:
    width = 0.8 / max(1, len(series))
    figure = _figure(max(5.0, 0.45 * len(groups) * len(series) + 2.0), 4.2)
    ax = figure.add_subplot()
    colours = ["#4c6ef5", "#f59f00", "#2f9e44", "#ae3ec9"]
    for s, (label, values) in enumerate(series.items()):
        xs = [g + (s - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width=width * 0.95, label=label, color=colours[s % len(colours)])
        ax.bar_label(bars, [f"{v:.2f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), groups, fontsize=9)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncols=len(series), frameon=False)
    ax.set_title(title, fontsize=11)
    return _save(figure, folder, name)


# --- one body per kind ----------------------------------------------------------------------------------------------


def _zero_shot(report: dict, folder: Path, catalogs, schema, progress) -> list[str]:
    field = report.get("field", "class")
    out = []
    confusion = report.get("confusion") or {"classes": []}
    if confusion["classes"]:
        src = _confusion_plot(confusion, report.get("per_class") or {}, field, folder)
        alt = f"confusion matrix of the {len(confusion['classes'])} most confused {field} values, counts annotated"
        out.append(
            _section(
                "Most confused classes",
                '<p class="note">Rows are the true values, columns the predicted ones, restricted to '
                "the values with the most mistakes made or received.</p>",
                _img(src, alt),
            )
        )
    else:
        out.append(_section("Most confused classes", '<p class="note">No mistakes: nothing to show.</p>'))
    pairs = report.get("confused_pairs") or []
    if pairs:
        out.append(
            _section(
                "Most frequent mistakes",
                _table(
                    ["true", "predicted", "count"], [[p["true"], p["predicted"], p["count"]] for p in pairs],
                    [False, False, True],
                ),
            )
        )
    per_class = report.get("per_class") or {}
    if per_class:
        src = _per_class_plot(per_class, field, report.get("top1"), folder)
        out.append(
            _section(
                "Accuracy per class",
                _img(src, f"top-1 accuracy of each of {len(per_class)} {field} values, sorted, with n per class"),
            )
        )
    calibrated = report.get("calibrated")
    if isinstance(calibrated, dict):
        out.append(
            _section(
                "Calibrated",
                _table(["figure", "value"], [[k, v] for k, v in calibrated.items() if _scalar(v)], [False, True]),
            )
        )
    return out


def _retrieval(report: dict, folder: Path, catalogs, schema, progress) -> list[str]:
    out = []
    ks = [k for k in ("R@1", "R@5", "R@10", "MRR") if k in report]
    series = {"title → image": [report[k] for k in ks]}
    back = report.get("image_to_text")
    if isinstance(back, dict):
        series["image → title"] = [back.get(k, 0.0) for k in ks]
    src = _grouped_bars(
        ks, series, f"Exact-product retrieval over {report.get('gallery_size')} products", folder, "recall.png"
    )
    out.append(_section("Recall", _img(src, "recall at 1, 5 and 10 and MRR, per direction")))
    worst = report.get("worst_queries") or []
    if worst:
        ids = [i for q in worst for i in (q["target_id"], *q["top5"])]
        thumbs = thumbnails(ids, catalogs, folder, schema, progress)
        rows = []
        for q in worst:
            cards = "".join(
                _card(
                    i,
                    thumbs,
                    '<span class="tag">target</span>' if i == q["target_id"] else "",
                    "target" if i == q["target_id"] else "",
                )
                for i in q["top5"]
            )
            rows.append(
                f'<div class="example"><div class="lead"><div class="query"><div class="text">“{_e(q["query"])}”</div>'
                f'<span class="tag miss">target at rank '
                f"{_e(q['rank'])}</span></div>{_card(q['target_id'], thumbs, '', 'given')}</div>"
                f'<div class="arrow" aria-hidden="true">→</div><div class="results">{cards}</div></div>'
            )
        out.append(
            _section(
                f"The {len(worst)} worst queries",
                '<p class="note">Each title, the product it describes (blue; its rank among '
                f"{_e(report.get('gallery_size'))}), and the top 5 products it retrieved.</p>",
                *rows,
            )
        )
    return out + _nested_tables(report)


def _composed(report: dict, folder: Path, catalogs, schema, progress) -> list[str]:
    out = []
    ks = [k for k in ("R@1", "R@5", "R@10", "R@50") if isinstance(report.get(k), (int, float))]
    if ks:
        series = {"all": [report[k] for k in ks]}
        for kind, figures in (report.get("by_kind") or {}).items():
            series[kind] = [figures.get(k, 0.0) for k in ks]
        src = _grouped_bars(
            ks, series, f"Composed retrieval over {report.get('gallery_size', '?')} products", folder, "recall.png"
        )
        out.append(_section("Recall", _img(src, "composed retrieval recall at k, overall and per triplet kind")))
    examples = report.get("examples")
    if not isinstance(examples, dict):
        out.append(
            _section(
                "Examples",
                '<p class="note">No example pictures: they are drawn for <code>--protocol triplets</code> only, '
                "whose products come from a catalog. The FashionIQ and CIRR protocols read their own image "
                "folders.</p>",
            )
        )
        return out + _nested_tables(report)
    ids = [i for group in examples.values() for x in group for i in (x["reference"], x["target"], *x["top5"])]
    thumbs = thumbnails(ids, catalogs, folder, schema, progress)
    for name, group in (("Successes", examples.get("successes", [])), ("Failures", examples.get("failures", []))):
        rows = []
        for x in group:
            cards = "".join(
                _card(i, thumbs, '<span class="tag">target</span>' if hit else "", "target" if hit else "")
                for i, hit in zip(x["top5"], x["top5_is_target"])
            )
            tag = "tag" if x["rank"] == 1 else "tag miss"
            reference = _card(x["reference"], thumbs, '<span class="tag info">reference</span>', "given")
            target = _card(x["target"], thumbs, '<span class="tag">best target</span>', "target")
            rows.append(
                f'<div class="example"><div class="lead">{reference}'
                f'<div class="query"><div class="text">+ “{_e(x["modification"])}”</div>'
                f'<span class="{tag}">best target at rank {_e(x["rank"])}</span>'
                f'<div class="note">{_e(x["n_targets"])} '
                f"target(s){_e(' · ' + x['kind']) if x.get('kind') else ''}</div></div>"
                f'{target}</div><div class="arrow" aria-hidden="true">→</div><div class="results">{cards}</div></div>'
            )
        note = (
            "Best target ranked first, spread through the triplet file."
            if name == "Successes"
            else "The triplets whose best target ranked lowest."
        )
        out.append(
            _section(
                f"{name} ({len(group)})",
                f'<p class="note">{note} Reference (blue), modification, the best-ranked target, '
                "then the top 5 results (the reference excluded); targets are green.</p>",
                *rows,
            )
        )
    return out + _nested_tables(report)


def _attributes(report: dict, folder: Path, catalogs, schema, progress) -> list[str]:
    per = report.get("per_attribute") or {}
    names = list(per)
    top1 = report.get("top1") or {}
    src = _grouped_bars(
        [f"{_short(n, 18)}\n(n={per[n]['n']})" for n in names],
        {"precision": [per[n]["precision"] for n in names], "recall": [per[n]["recall"] for n in names]},
        f"Mean precision {_fmt(report.get('mean_precision'))} over {len(names)} attributes",
        folder,
        "attributes.png",
    )
    out = [
        _section(
            "Precision and recall per attribute",
            _img(src, "precision and recall of each attribute, grouped, with n"),
            '<p class="note">Precision counts the answers given (“unknown” is no answer); recall counts every labelled '
            "item.</p>",
        )
    ]
    columns = ["n", "answered", "coverage", "precision", "recall", "threshold", "classes"]
    rows = [[n, *(per[n].get(c, "") for c in columns), top1.get(n, "")] for n in names]
    out.append(
        _section(
            "Figures per attribute",
            _table(["attribute", *columns, "top1"], rows, [False, *[True] * (len(columns) + 1)]),
        )
    )
    return out


_BODIES: dict[str, Callable[..., list[str]]] = {
    "zero-shot": _zero_shot, "retrieval": _retrieval, "composed": _composed, "attributes": _attributes,
}
