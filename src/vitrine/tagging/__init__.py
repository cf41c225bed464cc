"""Open-vocabulary attribute tagging over garment regions (RaF-CLIP)."""
