"""Our tiling must equal transformers' own InternVL preprocessing (GotOcr2ImageProcessorPil, crop_to_patches)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    GotOcr2ImageProcessorPil,
    get_optimal_tiled_canvas,
)

from internvl_cli.documents.tiling import TilingConfig, choose_grid, plan_tiles, tile_image
from tiny_models import preprocessor_config

SIZES = [
    (1, 1), (448, 448), (447, 449), (896, 896), (1000, 700), (1240, 1754), (1754, 1240), (2000, 2000),
    (333, 1001), (1792, 448), (4000, 60), (60, 4000), (3000, 10), (10, 3000), (800, 500), (748, 850),
    (2480, 3508), (612, 792), (1653, 2339), (5000, 5000), (123, 4567), (4567, 123), (640, 480), (1080, 1920),
]


def reference_processor(**overrides) -> GotOcr2ImageProcessorPil:
    config = preprocessor_config()
    config.pop("image_processor_type")
    config.pop("processor_class")
    config.update(crop_to_patches=True, **overrides)
    return GotOcr2ImageProcessorPil(**config)


def ours(**limits) -> TilingConfig:
    config = preprocessor_config()
    return TilingConfig.from_preprocessor_config(config).with_limits(limits.get("min_patches"),
                                                                    limits.get("max_patches"))


@pytest.mark.parametrize("width,height", SIZES)
def test_pixels_match_transformers(width, height):
    rng = np.random.default_rng(width * 7919 + height)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    reference = reference_processor()(images=[image], return_tensors="np")
    plan, tiles = tile_image(image, ours())
    assert reference["num_patches"][0] == plan.tiles == tiles.shape[0]
    assert tiles.dtype == np.float32
    assert np.abs(reference["pixel_values"] - tiles).max() <= 1e-5


@pytest.mark.parametrize("limits", [(1, 12), (1, 6), (4, 12), (1, 40), (1, 1), (2, 2)])
def test_grid_and_tile_count_match_for_every_limit(limits):
    lo, hi = limits
    processor = reference_processor(min_patches=lo, max_patches=hi)
    config = ours(min_patches=lo, max_patches=hi)
    for width, height in SIZES:
        plan = plan_tiles(width, height, config)
        expected = processor.get_number_of_image_patches(height, width, {"min_patches": lo, "max_patches": hi})
        assert plan.tiles == expected, (width, height, limits)
        if hi > 1:
            assert (plan.cols, plan.rows) == get_optimal_tiled_canvas((height, width), (448, 448), lo, hi)


def test_tie_break_prefers_larger_grid_only_when_the_image_fills_it():
    # A square image ties 1x1, 2x2 and 3x3; the larger grid wins only while area > half the grid's pixels.
    assert choose_grid(448, 448, 1, 12) == (1, 1)
    assert choose_grid(700, 700, 1, 12) == (2, 2)
    assert choose_grid(1000, 1000, 1, 12) == (3, 3)


def test_image_tokens_are_256_per_tile():
    plan = plan_tiles(1240, 1754, TilingConfig())
    assert (plan.cols, plan.rows, plan.tiles, plan.image_tokens) == (2, 3, 7, 7 * 256)
