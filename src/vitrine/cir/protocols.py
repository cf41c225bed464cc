"""The published composed-retrieval protocols: FashionIQ (R@10/50 per category) and CIRR (R@K, Rsubset@K, test server
JSON).

Both read the official annotation files. Images are looked up by name under `images`; missing ones are
reported and their queries skipped, since part of each dataset's images can no longer be downloaded.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from vitrine.cir.compose import Composer
from vitrine.cir.features import IMAGE_SUFFIXES, embed_image_files
from vitrine.cir.metrics import best_target_ranks, recall, subset_ranks
from vitrine.errors import MissingFile

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")


def fashioniq_text(captions: Sequence[str], rng: random.Random | None = None) -> str:
    """CLIP4Cir's join of the two captions: "c1 and c2"; in training (`rng` given) the order is random."""
    parts = [c.strip(".?, ") for c in captions]
    if rng is not None and rng.random() < 0.5:
        parts = parts[::-1]
    if len(parts) == 1:
        return parts[0].capitalize()
    return f"{parts[0].capitalize()} and {' and '.join(parts[1:])}"


def _image_index(images: str | os.PathLike) -> dict[str, Path]:
    root = Path(images)
    if not root.is_dir():
        raise MissingFile(f"image folder not found: {images}")
    return {p.stem: p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}


def _load_json(path: Path):
    if not path.is_file():
        raise MissingFile(f"annotation file not found: {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def evaluate_fashioniq(
    composer: Composer, root: str | os.PathLike, images: str | os.PathLike, split: str = "val",
    categories: Sequence[str] = FASHIONIQ_CATEGORIES, progress: bool = True,
) -> dict:
    """R@10 and R@50 per category against that category's gallery, and their averages."""
    root, found = Path(root), _image_index(images)
    report: dict = {"protocol": "fashioniq", "split": split, "categories": {}}
    for category in categories:
        names = _load_json(root / "image_splits" / f"split.{category}.{split}.json")
        captions = _load_json(root / "captions" / f"cap.{category}.{split}.json")
        files = [n for n in names if n in found]
        kept, gallery = embed_image_files(
            composer.model, [found[n] for n in files], progress=progress, desc=f"fashioniq {category}"
        )
        row = {files[i]: r for r, i in enumerate(kept)}
        usable = [c for c in captions if c.get("candidate") in row and c.get("target") in row]
        entry = {
            "n_queries": len(usable), "gallery_size": len(row), "missing_images": len(names) - len(row),
            "skipped_queries": len(captions) - len(usable),
        }
        if usable:
            queries = composer.queries(
                gallery[[row[c["candidate"]] for c in usable]], [fashioniq_text(c["captions"]) for c in usable]
            )
            ranks = best_target_ranks(queries, gallery, [[row[c["target"]]] for c in usable])
            entry.update({"R@10": round(recall(ranks, 10), 4), "R@50": round(recall(ranks, 50), 4)})
        report["categories"][category] = entry
    scored = [e for e in report["categories"].values() if "R@10" in e]
    if scored:
        report["R@10"] = round(sum(e["R@10"] for e in scored) / len(scored), 4)
        report["R@50"] = round(sum(e["R@50"] for e in scored) / len(scored), 4)
        report["average"] = round((report["R@10"] + report["R@50"]) / 2, 4)
    return report


def evaluate_cirr(
    composer: Composer, root: str | os.PathLike, images: str | os.PathLike, split: str = "val",
    submission: str | os.PathLike | None = None, progress: bool = True,
) -> dict:
    """R@1/5/10/50 (reference removed) and Rsubset@1/2/3 on `val`; on `test1`, the test-server JSON files."""
    root = Path(root)
    if not Path(images).is_dir():
        raise MissingFile(f"image folder not found: {images}")
    paths = _load_json(root / "image_splits" / f"split.rc2.{split}.json")
    captions = _load_json(root / "captions" / f"cap.rc2.{split}.json")
    files = {name: Path(images) / rel for name, rel in paths.items()}
    names = sorted(files)
    kept, gallery = embed_image_files(
        composer.model, [files[n] for n in names], progress=progress, desc=f"cirr {split}"
    )
    present = [names[i] for i in kept]
    row = {name: r for r, name in enumerate(present)}
    has_target = split != "test1"
    usable = [c for c in captions if c["reference"] in row and (not has_target or c.get("target_hard") in row)]
    report = {
        "protocol": "cirr", "split": split, "n_queries": len(usable), "gallery_size": len(row),
        "missing_images": len(paths) - len(row), "skipped_queries": len(captions) - len(usable),
    }
    if not usable:
        return report
    refs = [row[c["reference"]] for c in usable]
    queries = composer.queries(gallery[refs], [c["caption"] for c in usable])
    subsets = [[row[m] for m in c["img_set"]["members"] if m in row] for c in usable]
    if has_target:
        targets = [row[c["target_hard"]] for c in usable]
        ranks = best_target_ranks(queries, gallery, [[t] for t in targets], exclude=refs)
        report.update({f"R@{k}": round(recall(ranks, k), 4) for k in (1, 5, 10, 50)})
        sub = subset_ranks(queries, gallery, subsets, targets, refs)
        report.update({f"Rsubset@{k}": round(recall(sub, k), 4) for k in (1, 2, 3)})
        report["average"] = round((report["R@5"] + report["Rsubset@1"]) / 2, 4)  # the CIRR paper's summary figure
    if submission is not None:
        report["submission"] = write_cirr_submission(submission, usable, queries, gallery, present, refs, subsets)
    return report


def write_cirr_submission(
    out: str | os.PathLike, captions: Sequence[dict], queries: torch.Tensor, gallery: torch.Tensor,
    names: Sequence[str], refs: Sequence[int], subsets: Sequence[Sequence[int]],
) -> list[str]:
    """The two files the CIRR test server takes: top-50 over the gallery and top-3 within each img_set, reference
    removed."""
    recall_top: dict = {"version": "rc2", "metric": "recall"}
    subset_top: dict = {"version": "rc2", "metric": "recall_subset"}
    scores = queries @ gallery.T
    for i, caption in enumerate(captions):
        ranked = [j for j in scores[i].argsort(descending=True, stable=True)[:51].tolist() if j != refs[i]]
        recall_top[str(caption["pairid"])] = [names[j] for j in ranked[:50]]
        members = [m for m in dict.fromkeys(subsets[i]) if m != refs[i]]
        order = torch.as_tensor(scores[i][members]).argsort(descending=True)[:3].tolist()
        subset_top[str(caption["pairid"])] = [names[members[j]] for j in order]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in (("recall_submission.json", recall_top), ("recall_subset_submission.json", subset_top)):
        (out / name).write_text(json.dumps(data), encoding="utf-8")
        written.append(str(out / name))
    return written
