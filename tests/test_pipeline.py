"""The threaded tile loop (core/pipeline.py): every tile computed once, any number of reader
threads giving the same bits, and a failure in any thread ending the run with nothing left."""
import numpy as np
import pytest
import rasterio

import georasters
import tiny_models
from georasters import files_in
from sar_cloud_removal.core import engine, pipeline
from sar_cloud_removal.core.engine import RemovalRequest, remove_clouds
from sar_cloud_removal.core.tiling import TileGrid, plan_blocks
from test_engine_seams import tile_mean_onnx


@pytest.fixture
def scene(tmp_path):
    dn = georasters.s2_dn(300, 260, low=1000, high=5000)
    s2, s1 = georasters.pair(tmp_path, s2=dn, s1=georasters.s1_db(300, 260))
    return s2, s1, tile_mean_onnx(tmp_path / "tile_mean.onnx", 64, 24)


def _run(tmp_path, scene, name, **request):
    s2, s1, model = scene
    result = remove_clouds(RemovalRequest(str(s2), str(s1), str(tmp_path / f"{name}.tif"),
                                          model=str(model), s2_offset=0, batch_size=1,
                                          raw_network=True, **request))
    with rasterio.open(result.out_path) as out, rasterio.open(result.gate_path) as gate:
        return out.read(), gate.read()


def test_the_plan_computes_each_tile_once_and_keeps_it_until_its_last_block():
    grid = TileGrid(1000, 700, 128, 32, 16)
    blocks = plan_blocks(grid, 256)
    computed = [t for block in blocks for t in block.compute]
    assert sorted(computed) == sorted((r, c) for r in grid.rows for c in grid.cols)
    assert len(computed) == len(set(computed))
    kept, released = set(), set()
    for block in blocks:
        assert block.tiles == grid.tiles_touching(block.row0, block.col0, block.height,
                                                  block.width)
        for tile in block.tiles:
            assert tile in block.compute or (tile in kept and tile not in released)
        kept |= block.keep
        released |= block.release
    assert kept == released and kept   # everything stored is freed again


def test_more_reader_threads_and_no_threads_give_the_same_bits(tmp_path, scene, monkeypatch):
    monkeypatch.setattr(engine, "BLOCK_SIZE", 96)
    one = _run(tmp_path, scene, "one")
    monkeypatch.setattr(engine, "reader_threads", lambda device, cores: 3)
    three = _run(tmp_path, scene, "three")
    monkeypatch.setattr(pipeline, "OVERLAP", False)
    inline = _run(tmp_path, scene, "inline")
    for other in (three, inline):
        np.testing.assert_array_equal(one[0], other[0])
        np.testing.assert_array_equal(one[1], other[1])


@pytest.mark.parametrize("where", ["read_region", "read_original", "_block_outputs"])
def test_a_failure_in_a_reader_or_the_writer_ends_the_run_and_leaves_nothing(tmp_path, scene,
                                                                            monkeypatch, where):
    monkeypatch.setattr(engine, "BLOCK_SIZE", 96)
    owner = engine if where == "_block_outputs" else engine._Scene
    real, calls = getattr(owner, where), []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk gone")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, where, failing)
    s2, s1, model = scene
    with pytest.raises(OSError, match="disk gone"):
        remove_clouds(RemovalRequest(str(s2), str(s1), str(tmp_path / "o.tif"),
                                     model=str(model), s2_offset=0))
    assert files_in(tmp_path) == {"s2.tif", "s1.tif", "tile_mean.onnx"}


@pytest.mark.parametrize("dtype, nodata", [(np.uint16, None), (np.uint16, 0), (np.int16, -1),
                                           (np.float32, None), (np.float64, None)])
def test_block_outputs_keep_clear_pixels_exactly_as_keep_clear_does(dtype, nodata):
    """The block writer mixes only the pixels between the keep levels; the result must be
    keep_clear's, bit for bit, on every pixel."""
    from types import SimpleNamespace

    from sar_cloud_removal.core.keep_clear import keep_clear, keep_weight
    from sar_cloud_removal.core.sensors import denormalise_s2

    rng = np.random.default_rng(3)
    blended = rng.random((14, 60, 70), dtype=np.float32)
    blended[-1] = rng.choice([0.0, 0.3, 0.5, 0.6, 0.75, 0.9, 0.95, 1.0], (60, 70))
    original = (rng.random((13, 60, 70)) * 9000 + 1).astype(dtype)
    valid = rng.random((60, 70)) > 0.05
    # a model's own levels (0.7/0.8): the gate's 0.75 lies in the mixed band, 0.9 and up is kept
    scene = SimpleNamespace(offset=0, s2_scale=10000, keep_levels=(0.7, 0.8))
    out, gate = engine._block_outputs(scene, blended.copy(), valid, original, dtype=dtype,
                                      nodata=nodata)
    weight = keep_weight(np.clip(blended[-1], 0, 1), 0.7, 0.8)
    assert ((weight > 0) & (weight < 1)).any() and (weight == 1).any()
    want = np.stack([keep_clear(denormalise_s2(b, 0, dtype, 10000), o, weight)
                     for b, o in zip(blended[:-1], original)])
    if nodata is not None:
        want[want == nodata] = nodata + 1
    want[:, ~valid] = 0 if nodata is None and np.dtype(dtype).kind in "iu" else \
        (np.nan if nodata is None else nodata)
    np.testing.assert_array_equal(out, want)
    assert np.isnan(gate[0, ~valid]).all()
