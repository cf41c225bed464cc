"""`vitrine serve --catalog`: index a catalog (vectors, predicted tags, images) before serving it; resumable."""

from __future__ import annotations

import sys
from pathlib import Path

from vitrine.index.build import BuildResult, build_index
from vitrine.index.store import images_dir
from vitrine.models import create_model
from vitrine.serve.images import ImageStore, sweep_images
from vitrine.serve.settings import ServeSettings


def default_index_dir(catalog: str) -> str:
    """runs/serve/<catalog folder name>: beside the project, never inside the (possibly read-only) data."""
    name = Path(catalog.rstrip("/")).name or "catalog"
    return str(Path("runs") / "serve" / name)


def prepare_index(
    catalog: str, settings: ServeSettings, model: str, schema: str | None = None, progress: bool = True
) -> BuildResult:
    """Add every catalog product not yet in `settings.index`, with its predicted tags and its image."""
    from vitrine.data.catalog import schema_for
    from vitrine.models import DEFAULT_TAG_MODEL
    from vitrine.tagging.catalog_tags import SAVED_NAME, catalog_tagger
    from vitrine.tagging.views import make_views

    encoder = create_model(model, runtime=settings.runtime, fallback=True)
    tag_name = settings.tag_model or DEFAULT_TAG_MODEL
    tag_model = encoder if tag_name == encoder.name else create_model(tag_name, runtime=settings.runtime, fallback=True)
    resolved = schema_for(catalog, schema)[0]
    saved = None if settings.index.startswith("milvus:") else Path(settings.index) / SAVED_NAME
    tagger, about = catalog_tagger(
        tag_model, catalog, resolved, make_views(settings.regions), progress=progress, saved=saved
    )
    print(about, file=sys.stderr)
    images = ImageStore(Path(settings.images) if settings.images else images_dir(settings.index))
    sweep_images(settings.index, images)  # temp files of an earlier run that was killed mid-write
    return build_index(
        catalog, settings.index, encoder, schema=schema, progress=progress, tagger=tagger, keep_image=images.save
    )
