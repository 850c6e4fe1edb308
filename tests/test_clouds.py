"""Procedural clouds: what is promised to training (exact clear pixels, coverage, physics signs)."""
import numpy as np
import pytest
import rasterio

from sar_cloud_removal.synthetic.clouds import KINDS, CloudField, simulate_clouds
from sar_cloud_removal.synthetic.noise import fractal_noise

B2, B4, B10, B12 = 1, 3, 10, 12


@pytest.fixture(scope="module")
def clear():
    """A textured, dark-ish vegetated-looking L1C image (B10 near zero as in real L1C)."""
    texture = fractal_noise(160, 192, period=60, seed=7)
    base = np.array([0.12, 0.09, 0.08, 0.06, 0.10, 0.20, 0.25, 0.28, 0.30, 0.09, 0.004, 0.18,
                     0.09], dtype=np.float32)
    return (base[:, None, None] * (1.0 + 0.5 * texture[None])).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_pixels_without_cloud_or_shadow_are_bit_identical(clear, kind):
    sample = simulate_clouds(clear, np.random.default_rng(3), kind, coverage=0.4)
    untouched = (sample.cloud == 0) & (sample.shadow == 0)
    assert untouched.any() and not untouched.all()
    np.testing.assert_array_equal(sample.cloudy[:, untouched], clear[:, untouched])


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_are_finite_float32_with_matching_shapes(clear, kind):
    sample = simulate_clouds(clear, np.random.default_rng(4), kind, coverage=0.6)
    assert sample.cloudy.dtype == sample.cloud.dtype == sample.shadow.dtype == np.float32
    assert sample.cloudy.shape == clear.shape
    assert sample.cloud.shape == sample.shadow.shape == clear.shape[1:]
    assert np.isfinite(sample.cloudy).all() and sample.cloudy.min() >= 0
    for mask in (sample.cloud, sample.shadow):
        assert 0 <= mask.min() and mask.max() <= 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("coverage", [0.1, 0.5, 0.9])
def test_cloudy_fraction_matches_requested_coverage(clear, kind, coverage):
    sample = simulate_clouds(clear, np.random.default_rng(5), kind, coverage=coverage)
    assert abs((sample.cloud > 0).mean() - coverage) < 0.02


def test_zero_coverage_changes_nothing_and_full_coverage_covers_everything(clear):
    none = simulate_clouds(clear, np.random.default_rng(6), "thick", coverage=0.0)
    np.testing.assert_array_equal(none.cloudy, clear)
    full = simulate_clouds(clear, np.random.default_rng(6), "thin", coverage=1.0)
    assert (full.cloud > 0).all()


def test_thick_cloud_brightens_visible_bands_to_cloud_levels(clear):
    sample = simulate_clouds(clear, np.random.default_rng(8), "thick", coverage=0.5)
    core = sample.cloud > 0.95
    assert core.mean() > 0.2
    visible = slice(B2, B4 + 1)
    assert (sample.cloudy[visible][:, core] > clear[visible][:, core]).all()
    assert np.median(sample.cloudy[B2][core]) > 0.4


def test_shadows_darken_the_ground_away_from_their_cloud(clear):
    sample = simulate_clouds(clear, np.random.default_rng(9), "shadow", coverage=0.3)
    shaded = (sample.shadow > 0.1) & (sample.cloud == 0)
    assert shaded.sum() > 100, "the shadow should fall partly outside its cloud"
    assert (sample.cloudy[:, shaded] < clear[:, shaded]).all()
    only_shadow = (sample.shadow > 0) & (sample.cloud == 0)
    assert (sample.cloudy[:, only_shadow] <= clear[:, only_shadow]).all()


def test_thin_haze_is_stronger_at_short_wavelengths_and_shows_in_b10(clear):
    sample = simulate_clouds(clear, np.random.default_rng(10), "thin", coverage=0.7)
    hazy = sample.cloud > 0.1
    assert hazy.any() and sample.cloud.max() < 0.99, "haze must stay semi-transparent"
    change = np.abs(sample.cloudy - clear)[:, hazy].mean(axis=1)
    assert change[B2] > change[B12]
    assert (sample.cloudy[B10][hazy] > clear[B10][hazy] + 0.01).mean() > 0.9


def test_same_generator_state_gives_the_same_sample_and_seeds_differ(clear):
    a = simulate_clouds(clear, np.random.default_rng(11))
    b = simulate_clouds(clear, np.random.default_rng(11))
    c = simulate_clouds(clear, np.random.default_rng(12))
    np.testing.assert_array_equal(a.cloudy, b.cloudy)
    np.testing.assert_array_equal(a.shadow, b.shadow)
    assert not np.array_equal(a.cloud, c.cloud)


def test_mixed_coverage_is_random_when_not_given(clear):
    fractions = [(simulate_clouds(clear, np.random.default_rng(s)).cloud > 0).mean()
                 for s in range(8)]
    assert max(fractions) - min(fractions) > 0.3


def test_a_window_renders_exactly_the_matching_part_of_the_whole_field(clear):
    field = CloudField.draw(np.random.default_rng(13), 160, 192, kind="shadow", coverage=0.5)
    whole = field.composite(clear)
    part = field.composite(clear[:, 40:100, 64:150], row_off=40, col_off=64)
    np.testing.assert_allclose(part.cloudy, whole.cloudy[:, 40:100, 64:150], rtol=0, atol=1e-6)
    np.testing.assert_allclose(part.shadow, whole.shadow[40:100, 64:150], rtol=0, atol=1e-6)


def test_unknown_kind_and_wrong_band_count_are_rejected(clear):
    with pytest.raises(ValueError, match="kind"):
        simulate_clouds(clear, np.random.default_rng(0), "fog")
    with pytest.raises(ValueError, match="13"):
        simulate_clouds(clear[:4], np.random.default_rng(0))


def test_real_clear_scene_gets_realistic_cloud_values(shared_data):
    path = next((shared_data / "sen12mscr" / "s2").glob("*.tif"))
    with rasterio.open(path) as src:
        clear = src.read().astype(np.float32) / 10000
    sample = simulate_clouds(clear, np.random.default_rng(14), "thick", coverage=0.5)
    core = sample.cloud > 0.99
    # Real bright cloud in SEN12MS-CR L1C: roughly 0.45-1.2 in VNIR, far less in B10.
    assert 0.3 < np.median(sample.cloudy[B2][core]) < 1.3
    assert np.median(sample.cloudy[B10][core]) < 0.1
