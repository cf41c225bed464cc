"""Each protocol config `extends` its shipping twin and states only what its split changes: the split itself, and the
inputs and outputs that follow from it (the protocol model, its triplets, its run folders)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitrine.cir.config import CirTrainConfig
from vitrine.data.splits import load_split_config
from vitrine.train.config import TrainConfig
from vitrine.train.regions import RegionTrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PROTOCOLS = sorted(CONFIGS.glob("*-protocol*.json"))
SPLIT_KEYS = {"split", "split_from", "calibration_from", "model", "start", "triplets", "val_triplets", "out"}


def config_class(path: Path):
    classes = {"cir": CirTrainConfig, "regions": RegionTrainConfig}
    return classes.get(path.name.split("-", 1)[0], TrainConfig)


def test_there_are_five_pairs():
    assert [p.name for p in PROTOCOLS] == [
        "cir-kagl-base-protocol-agcn.json", "cir-kagl-base-protocol-stage1.json", "cir-kagl-base-protocol-stage2.json",
        "kagl-base-protocol.json", "regions-kagl-base-protocol.json",
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.stem)
def test_a_protocol_config_extends_its_twin_and_differs_only_in_its_split(protocol):
    raw = json.loads(protocol.read_text(encoding="utf-8"))
    twin = CONFIGS / protocol.name.replace("-protocol", "")
    assert raw.pop("extends") == twin.name and twin.is_file()
    assert set(raw) <= SPLIT_KEYS, f"{protocol.name} changes more than its split: {sorted(set(raw) - SPLIT_KEYS)}"
    paths = {key: value for key, value in raw.items() if isinstance(value, str)}
    assert all("protocol" in value for value in paths.values()), f"a protocol input or output that is not: {paths}"

    cls = config_class(protocol)
    shipping, measuring = cls.from_file(twin).to_dict(), cls.from_file(protocol).to_dict()
    assert {key for key in shipping if shipping[key] != measuring[key]} == set(raw)


def test_the_protocol_split_holds_out_types_the_shipping_one_trains_on():
    shipping, protocol = (load_split_config(CONFIGS / name) for name in ("kagl-base.json", "kagl-base-protocol.json"))
    assert shipping.holdout_field is None and shipping.holdout_fraction == 0.0
    assert protocol.holdout_field == "articleType"
    assert protocol.holdout_fraction > 0 and protocol.calibration_fraction > 0
    regions = RegionTrainConfig.from_file(CONFIGS / "regions-kagl-base-protocol.json")
    assert load_split_config(regions.split_from) == protocol  # read through the extends chain
