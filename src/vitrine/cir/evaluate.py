"""`vitrine eval composed` on a triplet file: R@1/10/50 with the reference removed from its own ranking."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from vitrine.cir.compose import Composer
from vitrine.cir.metrics import best_target_ranks, recall
from vitrine.cir.triplets import Triplet, read_triplets
from vitrine.embed.bank import ImageBank, image_bank
from vitrine.errors import InvalidInput
from vitrine.evaluate.metrics import top_rows

KS = (1, 10, 50)
EXAMPLES = 6  # successes and as many failures that `vitrine eval composed` lists for its report
TOP_RESULTS = 5


def evaluate_triplets(composer: Composer, bank: ImageBank, triplets: Sequence[Triplet], examples: int = 0) -> dict:
    """Rank the whole bank for each triplet whose reference and at least one target are in it; with `examples`, list
    that many successes and failures (`triplet_examples`)."""
    usable, skipped = [], Counter()
    for t in triplets:
        targets = [bank.row[x] for x in t.targets if x in bank.row and x != t.reference]
        if t.reference not in bank.row:
            skipped["reference not in gallery"] += 1
        elif not targets:
            skipped["no target in gallery"] += 1
        else:
            usable.append((t, targets))
    if not usable:
        raise InvalidInput(f"no triplet can be evaluated against this gallery ({dict(skipped)})")
    refs = [bank.row[t.reference] for t, _ in usable]
    tokens = None
    if composer.needs_tokens:
        if bank.tokens is None:
            raise InvalidInput(
                f"{composer.spec} reads image tokens: build the gallery with image_bank(..., with_tokens=True)"
            )
        tokens = bank.tokens[refs]
    queries = composer.queries(bank.embeds[refs], [t.modification for t, _ in usable], tokens)
    ranks = best_target_ranks(queries, bank.embeds, [targets for _, targets in usable], exclude=refs)
    report = {
        "n_queries": len(usable),
        "gallery_size": len(bank.items),
        **{f"R@{k}": round(recall(ranks, k), 4) for k in KS},
    }
    kinds = sorted({t.kind for t, _ in usable if t.kind})
    if len(kinds) > 1:
        report["by_kind"] = {
            kind: {
                "n_queries": int(sum(t.kind == kind for t, _ in usable)),
                **{
                    f"R@{k}": round(recall(ranks[[i for i, (t, _) in enumerate(usable) if t.kind == kind]], k), 4)
                    for k in KS
                },
            }
            for kind in kinds
        }
    if skipped:
        report["skipped"] = dict(skipped)
    if examples:
        report["examples"] = triplet_examples(
            bank, [t for t, _ in usable], [targets for _, targets in usable], refs, queries, ranks, examples
        )
    return report


def triplet_examples(
    bank: ImageBank, triplets: Sequence[Triplet], targets: Sequence[Sequence[int]], refs: Sequence[int],
    queries: torch.Tensor, ranks: torch.Tensor, count: int = EXAMPLES,
) -> dict:
    """Successes (best target ranked first), evenly spaced through the file, and failures (the worst-ranked best
    targets, the first triplet first among equals), each with its reference, text, best target, 1-based rank and top
    results (reference excluded, as in the metric)."""
    hits = [i for i in range(len(ranks)) if int(ranks[i]) == 0]
    successes = [hits[j * len(hits) // count] for j in range(count)] if len(hits) > count else hits
    failures = sorted((i for i in range(len(ranks)) if int(ranks[i]) > 0), key=lambda i: (-int(ranks[i]), i))[:count]

    def one(i: int) -> dict:
        scores = queries[i] @ bank.embeds.T
        scores[refs[i]] = -torch.inf
        top = top_rows(scores, min(TOP_RESULTS, len(scores) - 1), targets[i])
        wanted = set(targets[i])
        best = max(targets[i], key=lambda row: (float(scores[row]), -row))
        t = triplets[i]
        return {
            "reference": t.reference,
            "modification": t.modification,
            **({"kind": t.kind} if t.kind else {}),
            "target": bank.items[best].id,
            "n_targets": len(wanted),
            "rank": int(ranks[i]) + 1,
            "top5": [bank.items[row].id for row in top],
            "top5_is_target": [row in wanted for row in top],
        }

    return {"successes": [one(i) for i in successes], "failures": [one(i) for i in failures]}


def run_composed(
    data: str, triplets: str, composer: Composer, galleries: Sequence[str] = (), schema=None, on_error: str = "skip",
    cache_dir: str | None = "runs/cache", progress: bool = True,
) -> dict:
    """`vitrine eval composed --triplets`: the gallery is `data` plus `galleries`, embedded once and cached."""
    bank = image_bank(
        composer.model, [data, *galleries], cache_dir=cache_dir, schema=schema, on_error=on_error, progress=progress,
        with_tokens=composer.needs_tokens,
    )
    report = evaluate_triplets(composer, bank, read_triplets(triplets), examples=EXAMPLES)
    return {**report, "model": composer.model.name, "combiner": composer.spec}
