"""The real QGIS desktop under Xvfb with the plugin installed from its zip into a fresh profile:
the dock opens, the one-click "Remove clouds" on a real Sentinel-2 layer adds the restored and
gate layers, and a screenshot is saved to test_artifacts/desktop.png for people to look at."""
from pathlib import Path

import pytest
from qgis.PyQt.QtGui import QImage

from sar_cloud_removal.scripts.desktop_check import missing_tools, run_check

REPO = Path(__file__).resolve().parents[1]
PATCH = "ROIs2017_winter_112_p797.tif"
MISSING = missing_tools()


@pytest.mark.slow
@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (Debian packages qgis, "
                                          f"xvfb, imagemagick)")
def test_one_click_removal_in_the_real_desktop(shared_data, plugin_zip):
    out = REPO / "test_artifacts"
    status = run_check(plugin_zip, shared_data / "sen12mscr" / "s2_cloudy" / PATCH,
                       shared_data / "sen12mscr" / "s1" / PATCH, out, timeout_s=90)
    report = f"{status}\nQGIS log: {out / 'qgis.log'}"
    assert status.get("ok"), report
    assert "/profiles/default/python/plugins/sar_cloud_removal/" in status["plugin_file"], report
    restored, gate = sorted(status["results"], key=lambda r: r["bands"], reverse=True)
    assert (restored["bands"], restored["width"], restored["height"]) == (13, 256, 256)
    assert (gate["bands"], gate["width"], gate["height"]) == (1, 256, 256)
    assert restored["crs"] == gate["crs"] == "EPSG:32631"
    assert any(m.startswith("Clouds removed in") and "CPU" in m for m in status["messages"])
    shot = QImage(str(out / "desktop.png"))
    assert (shot.width(), shot.height()) == (1920, 1080)
    # Something was drawn: a blank or black screen has a handful of colours.
    colours = {shot.pixel(x, y) for x in range(0, 1920, 16) for y in range(0, 1080, 16)}
    assert len(colours) > 500, "the screenshot looks blank"
