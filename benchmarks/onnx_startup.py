"""Opening a model on the ONNX runtime, in a fresh process each time: from its files (today) against building the
torch model to find its export (the way before the fingerprint cache). Prints median seconds and the process's peak RSS.

    .venv/bin/python benchmarks/onnx_startup.py --model vitrine:kagl-base --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

OPEN = {
    "from files": "from vitrine.models import create_model\nmodel = create_model({name!r}, runtime='onnx')",
    "torch model built": (
        "from vitrine.models import create_model\nfrom vitrine.models.onnx_cache import export_dir_for\n"
        "from vitrine.models.onnx_runtime import OnnxEncoder\n"
        "torch_model = create_model({name!r})\nfrom vitrine.models.onnx_cache import "
        "weights_digest\nweights_digest(torch_model)\n"
        "model = OnnxEncoder(export_dir_for({name!r}))"
    ),
}
PROBE = """
import resource, time
start = time.perf_counter()
{body}
import json
peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vitrine:kagl-base")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    subprocess.run(
        [sys.executable, "-c", PROBE.format(body=OPEN["from files"].format(name=args.model))],
        check=True,
        capture_output=True,
    )  # the export exists
    results: dict[str, list[dict]] = {way: [] for way in OPEN}
    for _ in range(args.repeats):
        for way, body in OPEN.items():  # alternated, so drift hits both alike
            out = subprocess.run(
                [sys.executable, "-c", PROBE.format(body=body.format(name=args.model))],
                check=True,
                capture_output=True,
                text=True,
            )
            results[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.model} on --runtime onnx, {args.repeats} fresh processes each (importing vitrine included)\n")
    print("| opened | median s | peak RSS MiB |\n|---|---|---|")
    for way, rows in results.items():
        print(
            f"| {way} | {statistics.median(r['seconds'] for r in rows):.3f} | "
            f"{statistics.median(r['peak_rss_mib'] for r in rows):.0f} |"
        )


if __name__ == "__main__":
    main()
