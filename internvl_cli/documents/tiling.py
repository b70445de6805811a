"""Step 2, pages -> tiles: InternVL's dynamic high-resolution grid of 448x448 tiles plus a thumbnail, normalised."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_TILES_LIMIT = 40  # InternVL was trained with up to 12 tiles; inference is documented up to 40


@dataclass(frozen=True)
class TilingConfig:
    """How a page becomes tiles; defaults are InternVL's, real values come from the checkpoint's preprocessor config."""

    tile_size: int = 448
    min_tiles: int = 1
    max_tiles: int = 12
    use_thumbnail: bool = True
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    resample: int = Image.Resampling.BICUBIC
    image_seq_length: int = 256  # tokens per tile after pixel shuffle

    @classmethod
    def from_preprocessor_config(cls, config: dict, image_seq_length: int = 256) -> TilingConfig:
        """Reads a GotOcr2 `preprocessor_config.json` (the -hf checkpoints ship one)."""
        size = config.get("size") or {}
        tile = int(size.get("height") or size.get("shortest_edge") or cls.tile_size)
        return cls(
            tile_size=tile,
            min_tiles=int(config.get("min_patches", cls.min_tiles)),
            max_tiles=int(config.get("max_patches", cls.max_tiles)),
            image_mean=tuple(config.get("image_mean", IMAGENET_MEAN)),
            image_std=tuple(config.get("image_std", IMAGENET_STD)),
            resample=int(config.get("resample", Image.Resampling.BICUBIC)),
            image_seq_length=image_seq_length,
        )

    def with_limits(self, min_tiles: int | None = None, max_tiles: int | None = None) -> TilingConfig:
        """The same config with user tile limits, checked."""
        lo = self.min_tiles if min_tiles is None else min_tiles
        hi = self.max_tiles if max_tiles is None else max_tiles
        if not 1 <= lo <= hi <= MAX_TILES_LIMIT:
            raise UsageError(f"tile limits must satisfy 1 <= --min-tiles <= --max-tiles <= {MAX_TILES_LIMIT}")
        return replace(self, min_tiles=lo, max_tiles=hi)


@dataclass(frozen=True)
class TilePlan:
    """The grid chosen for one page and what it costs."""

    cols: int
    rows: int
    tiles: int  # grid tiles + thumbnail
    image_tokens: int  # <IMG_CONTEXT> tokens (without the <img></img> pair)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.cols, self.rows


@lru_cache(maxsize=64)
def candidate_grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """Every (cols, rows) with min <= cols*rows <= max, in InternVL's order (by tile count, stable)."""
    grids = [
        (cols, rows)
        for cols in range(1, max_tiles + 1)
        for rows in range(1, max_tiles + 1)
        if min_tiles <= cols * rows <= max_tiles
    ]
    return tuple(sorted(grids, key=lambda grid: grid[0] * grid[1]))


def choose_grid(width: int, height: int, min_tiles: int, max_tiles: int, tile_size: int = 448) -> tuple[int, int]:
    """InternVL's `find_closest_aspect_ratio`: closest aspect ratio; on a tie the larger grid while the image fills it."""
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def plan_tiles(width: int, height: int, config: TilingConfig) -> TilePlan:
    """The grid, tile count and image-token count of a width x height page; no pixels touched."""
    if config.max_tiles <= 1:  # transformers only crops to patches when more than one is allowed
        cols = rows = 1
    else:
        cols, rows = choose_grid(width, height, config.min_tiles, config.max_tiles, config.tile_size)
    tiles = cols * rows + (1 if config.use_thumbnail and cols * rows > 1 else 0)
    return TilePlan(cols=cols, rows=rows, tiles=tiles, image_tokens=tiles * config.image_seq_length)


def normalise(tiles: np.ndarray, config: TilingConfig) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW, rescaled by 1/255 then ImageNet-normalised (transformers' arithmetic order)."""
    lut = _normalisation_table(config.image_mean, config.image_std)  # (3, 256)
    out = np.empty((tiles.shape[0], 3, tiles.shape[1], tiles.shape[2]), dtype=np.float32)
    for channel in range(3):
        # A lookup per uint8 value gives the same float32 numbers as the arithmetic, several times faster.
        out[:, channel] = lut[channel][tiles[..., channel]]
    return out


@lru_cache(maxsize=8)
def _normalisation_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    values = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    mean32 = np.asarray(mean, dtype=np.float32)[:, None]
    std32 = np.asarray(std, dtype=np.float32)[:, None]
    return (values[None, :] - mean32) / std32


@dataclass
class TiledImage:
    """One image as every engine can take it: the raster at the grid's pixel size (uint8) and the thumbnail.

    The transformers engine asks for the normalised tiles (`tiles()`), vLLM and servers for the raster
    itself (`grid_picture()`), which their own tiler cuts into the same grid. Holding uint8 pixels instead of
    normalised float32 tiles keeps pages prepared ahead at a quarter of the memory.
    """

    plan: TilePlan
    grid: np.ndarray | None  # uint8 (rows*S, cols*S, 3); None when only its PNG is kept (`encoded`)
    thumbnail: np.ndarray | None  # uint8 (S, S, 3), when the plan has one
    config: TilingConfig
    # for servers: the grid's PNG, encoded once (maybe in a render worker); then no raster is held
    encoded: Any = None  # documents.encoded.EncodedPicture

    @property
    def tile_count(self) -> int:
        return self.plan.tiles

    def tiles(self) -> np.ndarray:
        """Normalised float32 tiles (N, 3, S, S), thumbnail last, as InternVL's vision tower takes them."""
        size = self.config.tile_size
        crops = [
            self._raster()[row * size:(row + 1) * size, col * size:(col + 1) * size]
            for row in range(self.plan.rows)
            for col in range(self.plan.cols)
        ]
        if self.thumbnail is not None:
            crops.append(self.thumbnail)
        return normalise(np.stack(crops), self.config)

    def grid_picture(self) -> Image.Image:
        """The page at the grid's pixel size, for engines that tile by themselves."""
        return Image.fromarray(self._raster())

    def settle(self) -> None:
        """Waits for a PNG prepared elsewhere; raises what preparing it raised."""
        if self.encoded is not None:
            self.encoded.result()

    def _raster(self) -> np.ndarray:
        if self.grid is None:
            raise TypeError("this image was prepared for a server (only its PNG is kept)")
        return self.grid


def _tiled(grid_image: Image.Image, plan: TilePlan, config: TilingConfig,
           thumbnail: Image.Image | None) -> TiledImage:
    return TiledImage(plan=plan, grid=np.asarray(grid_image, dtype=np.uint8),
                      thumbnail=None if thumbnail is None else np.asarray(thumbnail, dtype=np.uint8), config=config)


def prepare_image(image: Image.Image, config: TilingConfig) -> TiledImage:
    """An RGB image resized to its grid (and thumbnail) exactly as transformers' GotOcr2 processor does."""
    plan = plan_tiles(image.width, image.height, config)
    size = config.tile_size
    grid = image.resize((plan.cols * size, plan.rows * size), config.resample)
    thumbnail = image.resize((size, size), config.resample) if plan.tiles > plan.cols * plan.rows else None
    return _tiled(grid, plan, config, thumbnail)


def prepare_page(page, config: TilingConfig) -> TiledImage:
    """A Page ready for an engine: images go through `prepare_image`; PDF pages are rasterised straight at
    the grid's size."""
    if page.kind != "pdf":
        return prepare_image(page.native_image(), config)
    plan = plan_tiles(page.width, page.height, config)
    size = config.tile_size
    grid = page.render(plan.cols * size, plan.rows * size)
    thumbnail = page.render(size, size) if plan.tiles > plan.cols * plan.rows else None
    return _tiled(grid, plan, config, thumbnail)


def tile_image(image: Image.Image, config: TilingConfig) -> tuple[TilePlan, np.ndarray]:
    """Tiles an RGB image exactly as transformers' GotOcr2 image processor (crop_to_patches=True) does."""
    prepared = prepare_image(image, config)
    return prepared.plan, prepared.tiles()


def tile_page(page, config: TilingConfig) -> tuple[TilePlan, np.ndarray]:
    """Tiles a Page: images go through `tile_image`; PDF pages are rasterised straight at the grid's size."""
    prepared = prepare_page(page, config)
    return prepared.plan, prepared.tiles()
