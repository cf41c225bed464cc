"""Composed image retrieval (CLIP4Cir): triplets, cached features, training, protocols and evaluation."""
