"""Images/s and texts/s of every CPU backend, through vitrine's pipeline and as a bare forward pass.

The pipeline figure covers reading WebDataset shards, JPEG decoding, preprocessing, batching and the
forward pass, as `vitrine embed` runs them; the bare figure is the forward pass alone on tensors made
beforehand. Their ratio shows what the data pipeline costs. External backends use random weights
at their real sizes (ViT-B/32): speed does not depend on the weights.

    .venv/bin/python benchmarks/embed_throughput.py --data ../shared/data/kagl/shards
    .venv/bin/python benchmarks/embed_throughput.py --only vitrine:kagl-small vitrine:kagl-base --batch-size 32 64 128
    # torch, ONNX Runtime fp32 and int8 side by side (vitrine models; ratios against torch in the same run):
    .venv/bin/python benchmarks/embed_throughput.py --only vitrine:kagl-base --runtimes torch onnx onnx-int8
    --batch-size 1 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vitrine.data.catalog import open_catalog
from vitrine.data.loader import iter_batches, prefetch
from vitrine.models import create_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: its test support writes the checkpoints
from tests.support.random_checkpoints import BASE_TEXT, BASE_VISION, write_hf_clip, write_hf_siglip, write_openclip  # noqa: E402


def build_backends(root: Path) -> dict[str, str]:
    siglip_vision = {**BASE_VISION, "patch_size": 16}
    siglip_text = {
        **BASE_TEXT,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "max_position_embeddings": 64,
    }
    return {
        "vitrine:kagl-small": "vitrine:kagl-small",  # the light option: from-scratch CNN at 64 px
        "vitrine:kagl-base": "vitrine:kagl-base",  # the default: pretrained EfficientNet-Lite0 at 112 px
        "hf:clip ViT-B/32": f"hf:{write_hf_clip(root / 'clip', BASE_TEXT, BASE_VISION, 512)}",
        "hf:siglip ViT-B/16": f"hf:{write_hf_siglip(root / 'siglip', siglip_text, siglip_vision)}",
        "openclip:ViT-B-32": "openclip:ViT-B-32@"
        + str(
            write_openclip(root / "oc", width=768, layers=12, patch=32, image=224, ctx=77, embed=512, text_width=512)
        ),
    }


def median_rate(fn, count: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def measure(model, data: str, n_images: int, n_texts: int, batch_size: int, repeats: int) -> dict:
    titles = [record.title or "" for _, record in zip(range(n_texts), open_catalog(data).records())]
    size = model.image_transform.size
    pixels = torch.randn(batch_size, 3, size, size)
    batches = max(1, n_images // batch_size)
    n_images = batches * batch_size

    def pipeline_images():
        reader = open_catalog(data)
        for batch in prefetch(iter_batches(reader, model.image_transform, batch_size, limit=n_images)):
            model.encode_image(batch.pixels)

    def bare_images():
        for _ in range(batches):
            model.encode_image(pixels)

    tokenized = [model.tokenize(titles[i : i + batch_size]) for i in range(0, len(titles), batch_size)]

    def pipeline_texts():
        for i in range(0, len(titles), batch_size):
            model.encode_text(titles[i : i + batch_size])

    def bare_texts():
        for batch in tokenized:
            model.text_features_from_tokens(batch)

    with torch.inference_mode():
        bare_images()  # warm-up
        bare_texts()
        # Alternate the two measurements so that drift in machine load affects both alike.
        result = {}
        result["img_pipeline"] = median_rate(pipeline_images, n_images, repeats)
        result["img_bare"] = median_rate(bare_images, n_images, repeats)
        result["txt_pipeline"] = median_rate(pipeline_texts, len(titles), repeats)
        result["txt_bare"] = median_rate(bare_texts, len(titles), repeats)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/kagl/shards")
    parser.add_argument(
        "--images", type=int, default=2048, help="images per measurement for vitrine models (ViT-B models use 1/16)"
    )
    parser.add_argument("--texts", type=int, default=1024, help="texts per measurement (ViT-B models use 1/4)")
    parser.add_argument(
        "--batch-size", type=int, nargs="+", default=[64], help="one or more batch sizes, each measured in turn"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="backend labels to run")
    parser.add_argument(
        "--extra",
        nargs="*",
        default=[],
        help="more vitrine models to measure, by registry name (e.g. vitrine:runs/grid/NAME/model)",
    )
    parser.add_argument(
        "--runtimes",
        nargs="+",
        default=["torch"],
        choices=["torch", "onnx", "onnx-int8"],
        help="runtimes to compare for vitrine models (exported into $VITRINE_ONNX_CACHE on first use)",
    )
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, median of "
        f"{args.repeats}"
    )
    header = (
        f"{'backend':<22}{'runtime':>10}{'batch':>6}{'img/s pipeline':>16}{'img/s bare':>12}{'ratio':>8}"
        f"{'txt/s pipeline':>16}{'txt/s bare':>12}{'ratio':>8}{'img x torch':>12}{'txt x torch':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        backends = {**build_backends(Path(tmp)), **{name: name for name in args.extra}}
        print(header)
        for label, name in backends.items():
            if args.only and label not in args.only:
                continue
            big = not label.startswith("vitrine")
            n_images = args.images // 16 if big else args.images
            n_texts = args.texts // 4 if big else args.texts
            baseline: dict[int, dict] = {}
            for runtime in args.runtimes if not big else ["torch"]:  # ONNX export covers vitrine dual encoders
                model = create_model(name, runtime=runtime)
                for batch_size in args.batch_size:
                    r = measure(model, args.data, n_images, n_texts, batch_size, args.repeats)
                    base = baseline.setdefault(batch_size, r)
                    img, txt = r["img_pipeline"], r["txt_pipeline"]
                    print(
                        f"{label:<22}{runtime:>10}{batch_size:>6}{img:>16.1f}{r['img_bare']:>12.1f}"
                        f"{img / r['img_bare']:>8.2f}{txt:>16.1f}{r['txt_bare']:>12.1f}{txt / r['txt_bare']:>8.2f}"
                        f"{img / base['img_pipeline']:>12.2f}{txt / base['txt_pipeline']:>12.2f}",
                        flush=True,
                    )
                del model


if __name__ == "__main__":
    main()
