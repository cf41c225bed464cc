"""`vitrine serve --catalog`: index a catalog (vectors, predicted tags, images) before serving it; resumable."""
from __future__ import annotations

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


def prepare_index(catalog: str, settings: ServeSettings, model: str, schema: str | None = None, progress: bool = True) -> BuildResult:
    """Add every catalog product not yet in `settings.index`, with its predicted tags and its image."""
    from vitrine.models import DEFAULT_TAG_MODEL
    from vitrine.tagging.views import make_views
    from vitrine.tagging.tagger import Tagger
    from vitrine.tagging.vocabulary import builtin_vocabulary

    encoder = create_model(model, runtime=settings.runtime, fallback=True)
    tag_name = settings.tag_model or DEFAULT_TAG_MODEL
    tag_model = encoder if tag_name == encoder.name else create_model(tag_name, runtime=settings.runtime, fallback=True)
    tagger = Tagger(tag_model, builtin_vocabulary(model=tag_model.name), make_views(settings.regions))
    images = ImageStore(Path(settings.images) if settings.images else images_dir(settings.index))
    sweep_images(settings.index, images)  # temp files of an earlier run that was killed mid-write
    return build_index(catalog, settings.index, encoder, schema=schema, progress=progress, tagger=tagger, keep_image=images.save)
