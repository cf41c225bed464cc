"""`vitrine train clip|cir|regions` and `vitrine data make-triplets`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from vitrine.cli._common import SCHEMA_HELP, add_command, command_group
from vitrine.errors import InvalidInput


def _launch_processes(args: argparse.Namespace, threads: int = 0) -> int | None:
    """With --nproc N > 1 (and not already inside a launched process): rerun this command in N processes."""
    if args.nproc is not None and args.nproc < 1:
        raise InvalidInput("--nproc must be >= 1")
    if (args.nproc or 1) > 1 and "WORLD_SIZE" not in os.environ:
        from vitrine.cli.launch import launch

        return launch(args.nproc, args.argv, threads=threads)
    return None


def _train(args: argparse.Namespace, config, given: dict, train, report) -> int:
    """Apply the flags given over the config, launch N processes when asked, train, and print the report (rank 0)."""
    overrides = {k: v for k, v in given.items() if v is not None}
    config = config.replace(**overrides) if overrides else config
    launched = _launch_processes(args, config.threads or 0)
    if launched is not None:
        return launched
    result = train(config, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(report(result), indent=2))
    return 0


def cmd_train_clip(args: argparse.Namespace) -> int:
    """contrastive image-text training (OpenFashionCLIP recipe)

    Train a vitrine dual encoder, or fine-tune a CLIP/SigLIP you bring (hf:, openclip:), contrastively. The config
    (JSON) is saved next to the checkpoint; rerunning the same command resumes from the last checkpoint. The trained
    model is written to OUT/model.
    """
    from vitrine.train.clip import train_clip
    from vitrine.train.config import TrainConfig

    sources = [{"path": path, "weight": 1.0} for path in args.data] if args.data else None
    if args.config:
        config = TrainConfig.from_file(args.config)
    elif (
        args.model
    ):  # a trained model continues its own recipe (warm start, its margin inherited), on --data when given
        from vitrine.train.adapt import continue_recipe
        from vitrine.train.config import SourceConfig

        config = continue_recipe(
            args.model, tuple(SourceConfig(**s) for s in sources) if sources else TrainConfig().sources
        )
        sources = None
    else:
        config = TrainConfig()
    given = {
        "out": args.out, "epochs": args.epochs, "max_steps": args.max_steps, "device": args.device,
        "threads": args.threads, "model": args.model if args.config else None, "sources": sources,
    }
    return _train(
        args,
        config,
        given,
        train_clip,
        lambda result: {
            "model_dir": result.saved,
            "steps": result.steps,
            "seconds": result.seconds,
            "final_loss": round(result.final_loss, 4),
            **result.metrics,
        },
    )


def cmd_train_cir(args: argparse.Namespace) -> int:
    """composed image retrieval, CLIP4Cir's two stages

    Stage 1 fine-tunes the text projection, the text encoder or both encoders (--stage1-trains) with the sum
    combination; stage 2 trains the Combiner on cached features. Rerunning the same command resumes. Writes OUT/combiner
    (use it with --combiner) and, when stage 1 fine-tunes an encoder, OUT/model.
    """
    from vitrine.cir.config import CirTrainConfig
    from vitrine.cir.train import train_cir

    config = CirTrainConfig.from_file(args.config) if args.config else CirTrainConfig()
    given = {
        "stage": args.stage, "out": args.out, "epochs": args.epochs, "max_steps": args.max_steps, "model": args.model,
        "triplets": args.triplets, "val_triplets": args.val_triplets, "start": args.start, "threads": args.threads,
        "combiner": args.combiner, "data": args.data or None, "device": args.device,
        "stage1_trains": args.stage1_trains,
    }
    return _train(
        args,
        config,
        given,
        train_cir,
        lambda result: {
            "out": result.out, "combiner": result.saved, "encoder": _encoder_of(result.saved), "steps": result.steps,
            "seconds": result.seconds, "seconds_per_epoch": result.seconds_per_epoch, "val": result.metrics or None,
        },
    )


def _encoder_of(head_dir) -> str | None:
    """The model a trained head belongs to (after `stage1_trains: text|both`, the fine-tuned one): what --model
    takes."""
    from vitrine.models.heads import read_head_config

    return read_head_config(str(head_dir)).get("encoder")


def cmd_train_regions(args: argparse.Namespace) -> int:
    """region-attribute alignment (RaF-CLIP): crops and segmented views vs attribute texts

    Fine-tune a dual encoder so that each product's whole image, foreground crop and segmented crop match its category
    text and several attribute texts at once (multi-positive contrastive loss). Rerunning resumes. Writes OUT/model (use
    it as --model vitrine:OUT/model).
    """
    from vitrine.train.regions import RegionTrainConfig, train_regions

    config = RegionTrainConfig.from_file(args.config) if args.config else RegionTrainConfig()
    given = {
        "data": args.data, "model": args.model, "out": args.out, "epochs": args.epochs, "max_steps": args.max_steps,
        "threads": args.threads, "device": args.device,
    }
    return _train(
        args,
        config,
        given,
        train_regions,
        lambda result: {
            "model_dir": result.saved, "steps": result.steps, "seconds": result.seconds,
            "final_loss": round(result.final_loss, 4), "val": result.metrics,
        },
    )


def cmd_data_make_triplets(args: argparse.Namespace) -> int:
    """composed-retrieval triplets from KAGL-style colourways and gender swaps

    Pairs of products whose titles differ only in colour (or gender) words become triplets {reference, modification,
    targets}; the targets are every product of the pair's group with the target value.
    """
    from vitrine.cir.triplets import make_kagl_triplets, split_of, write_triplets
    from vitrine.data.catalog import open_catalog
    from vitrine.data.splits import load_split_config

    reader = open_catalog(args.data, schema=args.schema, on_error="skip", require_title=False)
    items = list(reader.records())
    triplets = make_kagl_triplets(items, seed=args.seed, kinds=args.kinds)
    if args.split != "all":
        split = load_split_config(args.split_config)
        attributes = {item.id: item.attributes for item in items}
        triplets = [t for t in triplets if split_of(t.reference, attributes[t.reference], split) == args.split]
    count = write_triplets(args.out, triplets)
    kinds = {kind: sum(t.kind == kind for t in triplets) for kind in args.kinds}
    print(
        f"wrote {count} triplets to {args.out} ({', '.join(f'{n} {k}' for k, n in kinds.items())}; "
        f"{len({t.reference for t in triplets})} reference products; split {args.split})",
        file=sys.stderr,
    )
    return 0


def _add_run_options(parser: argparse.ArgumentParser, nproc_help: str) -> None:
    """What every recipe's command takes beside its config: where to write, how long, how many processes."""
    parser.add_argument(
        "--out", help="run directory (checkpoint, train_config.json, metrics.csv, tb/, and what the run saves)"
    )
    parser.add_argument("--epochs", type=int, help="override the number of epochs (also sets the schedule length)")
    parser.add_argument(
        "--max-steps", type=int, help="stop after this many steps (the schedule still follows --epochs)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--device", help="cpu or cuda (under --nproc or torchrun: each process its own GPU)")
    parser.add_argument(
        "--nproc",
        type=int,
        help="train in N processes on this machine (torch.distributed via torchrun: gloo on CPU, "
        f"nccl on GPU); {nproc_help}",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def register(sub) -> None:
    recipes = command_group(
        sub, "train", "train models (recipes: clip, cir, regions)", "Training recipes.", dest="recipe", metavar="RECIPE"
    )
    clip = add_command(recipes, "clip", cmd_train_clip)
    clip.add_argument(
        "--config", help="training config JSON (e.g. configs/kagl-small.json); default: built-in defaults"
    )
    clip.add_argument("--data", nargs="*", help="override the config's sources with these catalogs (weight 1 each)")
    clip.add_argument(
        "--model", help="model to train: a config name, a vitrine model directory, hf:DIR or openclip:ARCH@FILE"
    )
    _add_run_options(
        clip,
        "the global batch is split over them, negatives gathered from every process. Several machines: run "
        "`torchrun --nnodes ... -m vitrine train clip ...` yourself",
    )
    cir = add_command(recipes, "cir", cmd_train_cir)
    cir.add_argument("--config", help="CIR config JSON (e.g. configs/cir-kagl-stage2.json); default: built-in defaults")
    cir.add_argument("--stage", type=int, choices=[1, 2], help="1: text side (or both encoders) + sum; 2: Combiner")
    cir.add_argument(
        "--stage1-trains",
        choices=["projection", "text", "both"],
        help="stage 1's trainable parts: the text projection (default), the text encoder, or both encoders",
    )
    cir.add_argument("--data", nargs="*", help="catalogs holding the triplets' products")
    cir.add_argument("--triplets", help="training triplets (JSONL)")
    cir.add_argument("--val-triplets", help="validation triplets (JSONL)")
    cir.add_argument("--model", help="encoder (registry name)")
    cir.add_argument("--start", help="stage 2: the stage-1 combiner directory whose text projection to build on")
    cir.add_argument(
        "--combiner", choices=["combiner", "agcn"], help="stage 2 network: CLIP4Cir's Combiner or RaF-CLIP's AGCN"
    )
    _add_run_options(cir, "each takes a slice of every batch's queries, scored against the whole batch's targets")
    regions = add_command(recipes, "regions", cmd_train_regions)
    regions.add_argument("--config", help="config JSON (e.g. configs/regions-kagl.json); default: built-in defaults")
    regions.add_argument("--data", help="catalog with attribute columns")
    regions.add_argument("--model", help="dual encoder to start from (registry name or model directory)")
    _add_run_options(regions, "each encodes a slice of every batch, the loss sees the whole batch")

    data_actions = command_group(sub, "data", "dataset tools (make-triplets)", "Dataset tools.")
    triplets = add_command(data_actions, "make-triplets", cmd_data_make_triplets)
    triplets.add_argument("--data", required=True, help="catalog with titles, baseColour, gender and articleType")
    triplets.add_argument("--out", required=True, help="output JSONL file")
    triplets.add_argument(
        "--split", choices=["all", "train", "val"], default="all",
        help="keep triplets whose reference is in the encoder's training split (train) or held out from it (val); "
        "default %(default)s"
    )
    triplets.add_argument(
        "--split-config",
        help="JSON holding the split, e.g. configs/kagl-base.json (the shipped model's) or "
        "configs/kagl-base-protocol.json "
        "(types held out); default: vitrine's protocol split",
    )
    triplets.add_argument("--kinds", nargs="+", choices=["colour", "gender"], default=["colour", "gender"])
    triplets.add_argument("--seed", type=int, default=0, help="template choice seed")
    triplets.add_argument("--schema", help=SCHEMA_HELP)
