"""`vitrine index images` stores the catalog images of an index built without them, so the service can show them."""

import io

import numpy as np
import pytest
from PIL import Image
from tests.conftest import make_rows, require_scale, write_folder

from vitrine.cli import main
from vitrine.index.build import build_index
from vitrine.index.store import images_dir
from vitrine.serve.images import MAX_SIDE, ImageStore


def photo_bytes(size, colour) -> bytes:
    """A JPEG with a coloured block, so a wrong or garbled image changes the mean colour."""
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), colour), (size[0] // 4, size[1] // 4))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def catalogs(tmp_path, small_model):
    """An index of 6 products built without images, and a catalog of those 6 plus 2 it lacks; one indexed image is now
    corrupt."""
    rows = make_rows(8)
    write_folder(tmp_path / "first", rows[:6])
    build_index(str(tmp_path / "first"), str(tmp_path / "idx"), small_model, progress=False)
    sources = {
        "1000": photo_bytes((1500, 1200), (200, 30, 30)), "1001": photo_bytes((60, 80), (30, 30, 200)),
        "1002": b"not an image",
    }
    write_folder(tmp_path / "cat", rows, images=sources)
    return tmp_path, sources


def test_backfilled_images_are_served_and_a_rerun_stores_nothing(catalogs, capsys):
    from fastapi.testclient import TestClient

    from vitrine.serve.app import create_app
    from vitrine.serve.settings import ServeSettings

    root, sources = catalogs
    index, args = (
        str(root / "idx"),
        ["index", "images", "--data", str(root / "cat"), "--index", str(root / "idx"), "--no-progress"],
    )
    assert not ImageStore(images_dir(index)).has("1001")  # index build keeps no images
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "stored 5, already there 0, not in the index 2, failed 1" in err and "id 1002: file is not an image" in err

    app = create_app(ServeSettings(index=index, tag_model="vitrine:small", combiner="sum"))
    with TestClient(app) as client:
        for product_id, size in (("1000", (MAX_SIDE, 819)), ("1001", (60, 80))):  # 1500x1200 downscaled to 1024 px
            response = client.get(f"/products/{product_id}/image")
            assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
            served = Image.open(io.BytesIO(response.content))
            assert served.format == "JPEG" and served.size == size
            source = Image.open(io.BytesIO(sources[product_id])).convert("RGB").resize(size)
            assert np.abs(np.asarray(served, float).mean((0, 1)) - np.asarray(source, float).mean((0, 1))).max() < 3
        assert client.get("/products/1002/image").status_code == 404  # its bad image was reported, not stored
        assert client.get("/products/1006/image").status_code == 404  # not in the index: no product, no image
    app.state.service.close()
    assert not ImageStore(images_dir(index)).has("1006")

    assert main(args) == 0
    assert "stored 0, already there 5, not in the index 2, failed 1" in capsys.readouterr().err
    assert main([*args, "--on-error", "fail"]) == 2
    assert "id 1002: file is not an image" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert "stored 5, already there 0" in capsys.readouterr().err
    assert main([*args, "--images", str(root / "shared")]) == 0
    assert "stored 5, already there 0" in capsys.readouterr().err and ImageStore(root / "shared").has("1003")

    # `index delete` removes the deleted products' stored images too, and only theirs
    assert main(["index", "delete", "--index", index, "1000", "no-such-id"]) == 0
    assert "deleted 1 of 2 ids" in capsys.readouterr().err
    assert not ImageStore(images_dir(index)).has("1000") and ImageStore(images_dir(index)).has("1001")
    assert main(["index", "delete", "--index", index, "1003", "--images", str(root / "shared")]) == 0
    assert not ImageStore(root / "shared").has("1003") and ImageStore(images_dir(index)).has("1003")


def test_a_missing_index_or_catalog_is_refused_and_nothing_is_created(catalogs, capsys):
    root, _ = catalogs
    assert main(["index", "images", "--data", str(root / "cat"), "--index", str(root / "none"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no vitrine index in" in err and "vitrine index build" in err and not (root / "none").exists()
    assert (
        main(["index", "images", "--data", str(root / "nowhere"), "--index", str(root / "idx"), "--no-progress"]) == 2
    )
    assert "catalog not found" in capsys.readouterr().err
    lite = root / "none.db"
    assert main(["index", "images", "--data", str(root / "cat"), "--index", f"milvus:{lite}", "--no-progress"]) == 2
    assert (
        "no vitrine index in" in capsys.readouterr().err
        and not lite.exists()
        and not images_dir(f"milvus:{lite}").exists()
    )


def test_milvus_lite_index_gets_its_images_and_is_closed_after(tmp_path, small_model, capsys):
    require_scale("pymilvus")
    from vitrine.index.milvus_store import _lite_users

    rows = make_rows(5)
    write_folder(tmp_path / "cat", rows)
    index = f"milvus:{tmp_path / 'catalog.db'}"
    build_index(str(tmp_path / "cat"), index, small_model, progress=False)
    args = ["index", "images", "--data", str(tmp_path / "cat"), "--index", index, "--no-progress"]
    assert main(args) == 0
    assert "stored 5, already there 0, not in the index 0, failed 0" in capsys.readouterr().err
    assert all(ImageStore(tmp_path / "catalog-images").has(row["id"]) for row in rows)
    assert str(tmp_path / "catalog.db") not in _lite_users  # closed: the file lock is released for a service to start
    assert main(args) == 0
    assert "stored 0, already there 5" in capsys.readouterr().err
