"""Tile layout, padding and blending: coverage, one tile shape, seamless and block-independent."""
import numpy as np
import pytest

from sar_cloud_removal.core.errors import UserError
from sar_cloud_removal.core.tiling import (BlendAccumulator, TileGrid, blend_window,
                                           effective_tile_size, reflect_pad, tile_starts)


@pytest.mark.parametrize("length, tile, overlap", [(200, 64, 16), (256, 64, 0), (65, 64, 8),
                                                   (1000, 256, 32), (64, 64, 16)])
def test_tiles_cover_the_axis_with_at_least_the_overlap_and_end_flush(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= tile - overlap).all()
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s:s + tile] = True
    assert covered.all()


def test_an_axis_shorter_than_a_tile_gets_one_tile():
    assert tile_starts(30, 64, 16) == [0]


def test_tile_size_rounded_to_the_model_multiple_and_shrunk_to_small_images():
    tile, note = effective_tile_size(250, 32, 8, 1000, 1000)
    assert tile == 232 and "250 to 256" in note     # 5 tiles of 256 or of 232 px cover 1000
    assert effective_tile_size(256, 32, 8, 100, 37) == (104, None)
    assert effective_tile_size(256, 32, 8, 300, 300) == (168, None)    # 2 tiles either way
    assert effective_tile_size(256, 32, 8, 1376, 1000) == (256, None)  # 256 fits exactly


@pytest.mark.parametrize("length, tile, overlap, multiple", [
    (1000, 256, 32, 8), (2064, 512, 64, 8), (2064, 256, 64, 8), (11044, 512, 64, 8),
    (300, 64, 30, 1), (97, 48, 16, 1), (5000, 256, 0, 16)])
def test_a_fitted_tile_covers_the_axis_with_as_many_tiles_and_no_more_pixels(length, tile,
                                                                              overlap, multiple):
    fitted, _ = effective_tile_size(tile, overlap, multiple, length, length)
    assert fitted <= tile and fitted % multiple == 0 and 2 * overlap < fitted
    starts = tile_starts(length, fitted, overlap)
    assert len(starts) == len(tile_starts(length, tile, overlap))
    assert starts[-1] + fitted == length and (np.diff(starts) <= fitted - overlap).all()
    if fitted - multiple > 2 * overlap:   # one multiple less would need another tile
        assert len(tile_starts(length, fitted - multiple, overlap)) > len(starts)


@pytest.mark.parametrize("tile, overlap", [(64, 32), (64, 100), (0, 0), (64, -1)])
def test_impossible_tile_settings_are_refused(tile, overlap):
    with pytest.raises(UserError):
        effective_tile_size(tile, overlap, 1, 500, 500)


def test_padding_reflects_on_the_requested_sides():
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    padded = reflect_pad(array, 1, 2, 0, 2)
    assert padded.shape == (2, 6, 6)
    np.testing.assert_array_equal(padded[:, 1:4, :4], array)
    np.testing.assert_array_equal(padded[:, 0, :4], array[:, 1])      # mirrored about row 0
    np.testing.assert_array_equal(padded[:, 4, :4], array[:, 1])      # mirrored about row 2
    np.testing.assert_array_equal(padded[:, 1:4, 4], array[:, :, 2])  # mirrored about col 3
    same = np.zeros((1, 6, 6), np.float32)
    assert reflect_pad(same, 0, 0, 0, 0) is same


def test_a_one_pixel_axis_is_repeated_not_reflected():
    line = np.arange(5, dtype=np.float32).reshape(1, 1, 5)
    padded = reflect_pad(line, 2, 1, 0, 0)
    assert padded.shape == (1, 4, 5) and (padded == line).all()


def test_a_margin_keeps_the_image_edge_inside_every_tile():
    grid = TileGrid(150, 110, 48, 12, margin=6)
    assert grid.rows[0] == -6 and grid.rows[-1] + 48 == 156
    assert grid.cols[0] == -6 and grid.cols[-1] + 48 == 116
    for edge_row in (0, 149):   # some tile sees each edge row with `margin` px of context
        depth = max(min(edge_row - r, r + 47 - edge_row) for r in grid.rows
                    if r <= edge_row < r + 48)
        assert depth >= 6
    assert effective_tile_size(256, 32, 8, 100, 37, margin=16) == (136, None)


def test_blend_window_is_smooth_symmetric_and_never_zero():
    window = blend_window(64)
    assert window.shape == (64, 64) and window.dtype == np.float32
    np.testing.assert_array_equal(window, window.T)
    np.testing.assert_array_equal(window, window[::-1, ::-1])
    assert 0 < window.min() < 0.01 and window.max() > 0.99
    assert np.abs(np.diff(window, axis=1)).max() < 0.06   # no step anywhere


def _blend(image, grid, blocks):
    """Blend tiles cut from `image` (bands, H, W) over `grid`, accumulated block by block."""
    out = np.empty_like(image)
    m = grid.margin
    padded = reflect_pad(image, m, grid.tile + m, m, grid.tile + m)
    for row0, col0, height, width in blocks:
        acc = BlendAccumulator(image.shape[0], row0, col0, height, width, grid.tile)
        for r, c in grid.tiles_touching(row0, col0, height, width):
            acc.add(padded[:, r + m:r + m + grid.tile, c + m:c + m + grid.tile], r, c)
        out[:, row0:row0 + height, col0:col0 + width] = acc.result()
    return out


@pytest.mark.parametrize("margin", [0, 6])
def test_blending_ones_gives_exactly_one_and_an_image_gives_itself(margin):
    rng = np.random.default_rng(0)
    image = np.concatenate([rng.random((2, 150, 110), dtype=np.float32),
                            np.ones((1, 150, 110), np.float32)])
    grid = TileGrid(150, 110, 48, 12, margin)
    blended = _blend(image, grid, [(0, 0, 150, 110)])
    assert (blended[2] == 1).all()
    np.testing.assert_allclose(blended[:2], image[:2], rtol=1e-6)


def test_blocks_do_not_change_the_blend():
    """Whatever block a pixel falls in, it is blended from the same tiles with the same weights."""
    rng = np.random.default_rng(1)
    image = rng.random((1, 150, 110), dtype=np.float32)
    # Predictions that depend on the tile (as a network's do near tile edges): add a tile bias.
    grid = TileGrid(150, 110, 48, 12)

    def biased(blocks):
        out = np.empty_like(image)
        for row0, col0, height, width in blocks:
            acc = BlendAccumulator(1, row0, col0, height, width, grid.tile)
            for r, c in grid.tiles_touching(row0, col0, height, width):
                acc.add(image[:, r:r + 48, c:c + 48] + np.float32(r * 7 + c), r, c)
            out[:, row0:row0 + height, col0:col0 + width] = acc.result()
        return out

    whole = biased([(0, 0, 150, 110)])
    split = biased([(0, 0, 64, 64), (0, 64, 64, 46), (64, 0, 86, 64), (64, 64, 86, 46)])
    np.testing.assert_array_equal(whole, split)
    # and the tile bias is blended smoothly: no jump bigger than the bias steps themselves
    assert np.abs(np.diff(whole - image, axis=2)).max() < 12


def test_tiles_touching_lists_exactly_the_tiles_meeting_a_block():
    grid = TileGrid(200, 200, 64, 16)
    touching = grid.tiles_touching(100, 0, 20, 40)
    assert touching == [(48, 0), (96, 0)]   # rows 48..111 and 96..159 meet rows 100..119
    assert len(grid.tiles_touching(0, 0, 200, 200)) == len(grid.rows) * len(grid.cols)
