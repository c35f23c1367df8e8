"""Any folder tree of images (CelebA, LSUN exports, your own photos), decoded once at setup."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ganforge.data.base import InMemoryDataModule
from ganforge.errors import ConfigError, DataError, check_bool, check_int

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def decode(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image file → uint8 (channels, image_size, image_size): the shorter side resized to
    `image_size`, then the centre cropped, as in DCGAN's CelebA preprocessing."""
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            scale = image_size / min(img.size)
            w, h = (
                max(image_size, round(img.width * scale)),
                max(image_size, round(img.height * scale)),
            )
            img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
            left, top = (w - image_size) // 2, (h - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
            array = np.array(img, dtype=np.uint8)  # a writable copy, unlike np.asarray
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: cannot decode this image ({e}); delete or replace it") from e
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


class ImageFolderDataModule(InMemoryDataModule):
    """Every image under `root` (recursively), as uint8 `channels`×`image_size`×`image_size`.

    With `labels: true` an image's class is its first-level subfolder under `root` (class
    indices follow the sorted folder names) and every image must sit in one; otherwise there are
    no labels. There is no test split.
    """

    name = "image_folder"

    def __init__(
        self,
        *,
        root: str,
        image_size: int = 64,
        channels: int = 3,
        labels: bool = False,
        n_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: the folder to read.
            image_size: side of the square images after resize and centre crop.
            channels: 1 (grey-scale) or 3 (RGB); images are converted on decode.
            labels: take class labels from the first-level subfolders.
            n_classes: optional copy of the number of class folders, checked against the
                folder; when None it is counted from the folder names on first use.
            **kwargs: see `InMemoryDataModule`.
        """
        check_int("data.image_size", image_size)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ConfigError(f"data.channels={channels!r} must be 1 (grey-scale) or 3 (RGB)")
        check_bool("data.labels", labels)
        if n_classes is not None and not labels:
            raise ConfigError(
                f"data.n_classes={n_classes} needs data.labels=true (classes come from subfolders)"
            )
        if n_classes is not None:
            check_int("data.n_classes", n_classes)
        self.root, self.labels = str(root), labels
        self._channels, self._image_size = channels, image_size
        self._declared_n_classes = n_classes
        self._files: list[Path] | None = None
        super().__init__(**kwargs)

    @property
    def n_classes(self) -> int | None:
        # Listing folder names is cheap and reads no pixels, so a model can be sized from it
        # before setup; a declared value is trusted here and checked when the data is loaded.
        if not self.labels:
            return None
        if self._declared_n_classes is not None:
            return self._declared_n_classes
        return len(self.class_names())

    def files(self) -> list[Path]:
        """Every image under root, sorted so the order (and labels) are reproducible."""
        if self._files is None:
            root = Path(self.root).expanduser()
            if not root.is_dir():
                raise DataError(f"data.root={self.root} is not a folder; point it at your images")
            self._files = sorted(
                p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()
            )
            if not self._files:
                raise DataError(
                    f"data.root={self.root} holds no images ({', '.join(sorted(EXTENSIONS))}, "
                    f"searched recursively)"
                )
        return self._files

    def class_names(self) -> list[str]:
        """Sorted first-level subfolder names of the images; index = label."""
        root = Path(self.root).expanduser()
        relative = [f.relative_to(root) for f in self.files()]
        loose = [r for r in relative if len(r.parts) == 1]
        if loose:
            raise DataError(
                f"data.labels=true takes each image's class from its subfolder, but "
                f"{len(loose)} images sit directly in data.root={self.root} (e.g. {loose[0]}); "
                f"move them into class folders or set data.labels=false"
            )
        return sorted({r.parts[0] for r in relative})

    def load(self, split: str) -> tuple[Tensor, Tensor | None]:
        if split == "test":
            raise self.no_test_split("evaluate against the train split (split='train')")
        files = self.files()
        # Filled in place, so a large folder never exists twice in memory (list + stack).
        x = torch.empty(
            len(files), self.channels, self.image_size, self.image_size, dtype=torch.uint8
        )

        def fill(i: int) -> None:
            x[i] = torch.from_numpy(decode(files[i], self.image_size, self.channels))

        # PIL releases the GIL while decoding and resizing, so threads give real parallelism.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(fill, range(len(files))))  # list() re-raises a worker's DataError
        if not self.labels:
            return x, None
        names = self.class_names()
        if self._declared_n_classes not in (None, len(names)):
            raise ConfigError(
                f"data.n_classes={self._declared_n_classes} but data.root={self.root} has "
                f"{len(names)} class folders; set data.n_classes={len(names)}"
            )
        index = {name: i for i, name in enumerate(names)}
        root = Path(self.root).expanduser()
        label = torch.tensor([index[f.relative_to(root).parts[0]] for f in files])
        return x, label
