"""Deterministic splits: by id hash, and by holding out whole attribute values (unseen categories)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from vitrine.config_file import ConfigFile, read_config
from vitrine.errors import ConfigError


def hash_unit(*parts: object) -> float:
    """A stable number in [0, 1) from the parts; the same on every machine and Python run."""
    digest = hashlib.sha1("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class SplitConfig(ConfigFile):
    """Items with a held-out attribute value are 'unseen'; the rest split by id into 'train'/'val'.

    `calibration_fraction` holds out a second, disjoint set of values ('calib'): never trained on, they
    stand in for unseen classes when tuning the generalised zero-shot calibration, so that the real
    'unseen' values are only ever used for the final evaluation.
    """

    seed: int = 0
    val_fraction: float = 0.05
    holdout_field: str | None = None
    holdout_values: tuple[str, ...] = ()
    holdout_fraction: float = 0.0
    calibration_fraction: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ConfigError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if not 0.0 <= self.calibration_fraction < 1.0 - self.holdout_fraction:
            raise ConfigError(
                f"calibration_fraction must be in [0, 1 - holdout_fraction), got {self.calibration_fraction}"
            )
        if (self.holdout_values or self.holdout_fraction or self.calibration_fraction) and not self.holdout_field:
            raise ConfigError("holdout_values/holdout_fraction/calibration_fraction need a holdout_field")

    def is_held_out(self, value: str | None) -> bool:
        """Whether a value of `holdout_field` is held out (named, or chosen by hash)."""
        if value is None or not self.holdout_field:
            return False
        if value in self.holdout_values:
            return True
        return (
            self.holdout_fraction > 0
            and hash_unit("holdout", self.seed, self.holdout_field, value) < self.holdout_fraction
        )

    def is_calibration(self, value: str | None) -> bool:
        """Whether a value is held out for calibration (disjoint from the held-out values)."""
        if value is None or not self.calibration_fraction or self.is_held_out(value):
            return False
        return hash_unit("calibration", self.seed, self.holdout_field, value) < self.calibration_fraction

    def assign(self, item_id: str, attributes: Mapping[str, str | None] | None = None) -> str:
        """'unseen', 'calib', 'val' or 'train' for one item."""
        if self.holdout_field and attributes is not None:
            value = attributes.get(self.holdout_field)
            if self.is_held_out(value):
                return "unseen"
            if self.is_calibration(value):
                return "calib"
        return "val" if hash_unit("split", self.seed, item_id) < self.val_fraction else "train"


def default_protocol_split() -> SplitConfig:
    """The protocol split training configs default to: 10% of article types held out, 10% more for calibration."""
    return SplitConfig(
        seed=0, val_fraction=0.05, holdout_field="articleType", holdout_fraction=0.1, calibration_fraction=0.1
    )


SPLITS = ("all", "train", "val", "unseen", "calib", "heldout")


def load_split_config(path: str | os.PathLike | None) -> SplitConfig:
    """A split from a JSON file: a SplitConfig object, or a training config / training.json that holds one."""
    if path is None:
        return default_protocol_split()
    return split_config_from(read_config(path), origin=str(path))


def split_config_from(data: dict, origin: str | None = None) -> SplitConfig:
    """A split from its dict, or from a training config / training.json dict that holds one."""
    data = data.get("config", data)
    return SplitConfig.from_dict(data.get("split", data), origin)


def split_filter(split: str, config: SplitConfig):
    """A record predicate for `split` ('heldout' is val + unseen)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if split == "all":
        return None
    wanted = {"val", "unseen"} if split == "heldout" else {split}
    return lambda record: config.assign(record.id, record.attributes) in wanted
