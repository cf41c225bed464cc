"""The `vitrine embed` job: catalog -> embeddings (.npy) + metadata (.csv), resumable."""

from vitrine.embed.job import EmbedResult, run_embed

__all__ = ["EmbedResult", "run_embed"]
