"""Which runtime's output space an index holds, and which query runtimes may search it.

torch and onnx (fp32) produce the same vectors (parity >= 0.9999 cosine, tested), so they mix freely. onnx-int8
text vectors differ a little; they may meet vectors of another runtime only when the parity measured at export (the
minimum cosine of int8 vs fp32 text embeddings) reaches PARITY_MIN_COSINE. An index made before runtimes were
recorded holds torch vectors.
"""

from __future__ import annotations

from vitrine.index.store import IndexMismatchError

RUNTIME_STATE = "runtime"
SAME_SPACE = {"torch", "onnx"}


def runtime_of(encoder) -> str:
    return getattr(encoder, "runtime", "torch")


def index_runtime(store) -> str:
    return store.get_state(RUNTIME_STATE, "torch")


def int8_parity(encoder) -> float | None:
    """The minimum int8-vs-fp32 text cosine measured at export, or None when unknown."""
    parity = getattr(encoder, "parity", None) or {}
    value = parity.get("int8_vs_fp32_text", {}).get("min")
    return None if value is None else float(value)


def compatible(index: str, query: str, parity: float | None) -> bool:
    from vitrine.models.onnx_export import PARITY_MIN_COSINE

    if index == query or {index, query} <= SAME_SPACE:
        return True
    return parity is not None and parity >= PARITY_MIN_COSINE


def check_query_runtime(store, encoder) -> None:
    """Refuse to query `store` with `encoder` when their runtimes' vectors may not be mixed (see module doc)."""
    check_runtimes(index_runtime(store), runtime_of(encoder), int8_parity(encoder))


def check_runtimes(index: str, query: str, parity: float | None) -> None:
    if compatible(index, query, parity):
        return
    from vitrine.models.onnx_export import PARITY_MIN_COSINE

    measured = "not measured" if parity is None else f"{parity:.4f}"
    alternatives = {"torch": " or onnx", "onnx": " or torch"}.get(index, "")
    raise IndexMismatchError(
        f"this index was built with --runtime {index}; --runtime {query} gives vectors in another space "
        f"(int8 vs fp32 text cosine {measured}, below the {PARITY_MIN_COSINE} that mixing needs). "
        f"Query it with --runtime {index}{alternatives}, or rebuild it with --runtime {query}."
    )


def record_runtime(store, runtime: str, parity: float | None = None) -> dict[str, str]:
    """On a build: refuse to add another runtime's vectors to an existing index; returns the state entry that each
    commit of the build saves with its rows (a new index learns its runtime with its first products)."""
    if store.stats()["products"] or store.get_state(RUNTIME_STATE) is not None:
        check_runtimes(index_runtime(store), runtime, parity)
        return {RUNTIME_STATE: index_runtime(store)}
    return {RUNTIME_STATE: runtime}
