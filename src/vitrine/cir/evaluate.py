"""`vitrine eval composed` on a triplet file: R@1/10/50 with the reference removed from its own ranking."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from vitrine.cir.compose import Composer
from vitrine.embed.bank import ImageBank, image_bank
from vitrine.cir.metrics import best_target_ranks, recall
from vitrine.cir.triplets import Triplet, read_triplets

KS = (1, 10, 50)


def evaluate_triplets(composer: Composer, bank: ImageBank, triplets: Sequence[Triplet]) -> dict:
    """Rank the whole bank for each triplet whose reference and at least one target are in it."""
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
        raise ValueError(f"no triplet can be evaluated against this gallery ({dict(skipped)})")
    refs = [bank.row[t.reference] for t, _ in usable]
    tokens = None
    if composer.needs_tokens:
        if bank.tokens is None:
            raise ValueError(f"{composer.spec} reads image tokens: build the gallery with image_bank(..., with_tokens=True)")
        tokens = bank.tokens[refs]
    queries = composer.queries(bank.embeds[refs], [t.modification for t, _ in usable], tokens)
    ranks = best_target_ranks(queries, bank.embeds, [targets for _, targets in usable], exclude=refs)
    report = {"n_queries": len(usable), "gallery_size": len(bank.items), **{f"R@{k}": round(recall(ranks, k), 4) for k in KS}}
    kinds = sorted({t.kind for t, _ in usable if t.kind})
    if len(kinds) > 1:
        report["by_kind"] = {kind: {"n_queries": int(sum(t.kind == kind for t, _ in usable)),
                                    **{f"R@{k}": round(recall(ranks[[i for i, (t, _) in enumerate(usable) if t.kind == kind]], k), 4) for k in KS}}
                             for kind in kinds}
    if skipped:
        report["skipped"] = dict(skipped)
    return report


def run_composed(data: str, triplets: str, composer: Composer, galleries: Sequence[str] = (), schema=None,
                 on_error: str = "skip", cache_dir: str | None = "runs/cache", progress: bool = True) -> dict:
    """`vitrine eval composed --triplets`: the gallery is `data` plus `galleries`, embedded once and cached."""
    bank = image_bank(composer.model, [data, *galleries], cache_dir=cache_dir, schema=schema, on_error=on_error, progress=progress,
                      with_tokens=composer.needs_tokens)
    report = evaluate_triplets(composer, bank, read_triplets(triplets))
    return {**report, "model": composer.model.name, "combiner": composer.spec}
