"""Where a search request's time goes, per runtime: decode, transform, tokenize, model, index, and the whole service
call.

Runs the service's own objects in this process (no HTTP), one thread, one query at a time and in batches of 16
(what the micro-batcher forms under load), and prints the median milliseconds of each stage. With the server CPU
per request from `benchmarks/load.py` (its `server CPU ms/req` column), the rest is HTTP, the framework and JSON.

    .venv/bin/python benchmarks/serve_profile.py --index runs/serve/kagl-hires --runtimes torch onnx
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from vitrine.serve.service import Query, SearchService
from vitrine.serve.settings import ServeSettings


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def profile(index: str, runtime: str, titles: list[str], images: list[bytes], repeats: int) -> dict:
    torch.set_num_threads(1)  # as each serve worker runs
    service = SearchService(ServeSettings(index=index, runtime=runtime, threads=1))
    model, store = service.model, service.store
    title, picture = titles[0], images[0]
    decoded = Image.open(io.BytesIO(picture)).convert("RGB")
    pixels = model.image_transform(decoded).unsqueeze(0)
    tokens = model.tokenize([title])
    batch_titles, batch_pixels = titles[:16], pixels.repeat(16, 1, 1, 1)
    batch_tokens = model.tokenize(batch_titles)
    with torch.inference_mode():
        vector = model.encode_text([title]).numpy()
    row = {"runtime": runtime}
    with torch.inference_mode():
        row["tokenize"] = median_ms(lambda: model.tokenize([title]), repeats)
        row["text model"] = median_ms(lambda: model.text_features_from_tokens(tokens), repeats)
        row["text model /16"] = round(median_ms(lambda: model.text_features_from_tokens(batch_tokens), repeats) / 16, 2)
        row["decode"] = median_ms(lambda: Image.open(io.BytesIO(picture)).convert("RGB"), repeats)
        row["transform"] = median_ms(lambda: model.image_transform(decoded), repeats)
        row["image model"] = median_ms(lambda: model.image_features(pixels), repeats)
        row["image model /16"] = round(median_ms(lambda: model.image_features(batch_pixels), repeats) / 16, 2)
    row["index search"] = median_ms(lambda: store.search(vector, 24), repeats)
    row["service text"] = median_ms(lambda: service.search(Query(text=title, k=24)), repeats)
    row["service image"] = median_ms(
        lambda: service.search(Query(image=Image.open(io.BytesIO(picture)).convert("RGB"), k=24)), repeats
    )
    service.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="runs/serve/kagl-hires")
    parser.add_argument("--images", default="../shared/data/kagl-hires/images")
    parser.add_argument("--catalog", default="../shared/data/kagl-hires/catalog.csv")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    import csv

    titles = [row["title"] for row in csv.DictReader(open(args.catalog, encoding="utf-8"))][:64]
    images = [p.read_bytes() for p in sorted(Path(args.images).glob("*.jpg"))[:4]]
    rows = [profile(args.index, runtime, titles, images, args.repeats) for runtime in args.runtimes]
    stages = [key for key in rows[0] if key != "runtime"]
    print(
        "| stage (ms, median, 1 thread) | " + " | ".join(r["runtime"] for r in rows) + " |\n|---|" + "---|" * len(rows)
    )
    for stage in stages:
        print(f"| {stage} | " + " | ".join(f"{r[stage]:.2f}" for r in rows) + " |")


if __name__ == "__main__":
    main()
