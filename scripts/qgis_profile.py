"""Throw-away QGIS profiles with the plugin zip installed, for the end-to-end checks.

A fresh profile is what a new user has: no settings, no other plugins, the plugin only as the zip
delivers it. The layout is QGIS's own: `<root>/profiles/default/python/plugins/<plugin>`, with
`<root>` passed to QGIS as `--profiles-path` or to qgis_process as `QGIS_CUSTOM_CONFIG_PATH`.
"""
import zipfile
from pathlib import Path

PROFILE = Path("profiles") / "default"


def install_plugin(zip_path, root) -> Path:
    """Unpack the zip into the profile's plugin folder, as "Install from ZIP" does; returns the
    profile folder."""
    profile = Path(root) / PROFILE
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(plugins)
    return profile


def enable_plugin(profile, plugin_id: str) -> None:
    """Mark the plugin enabled in the profile's QGIS3.ini, as the Plugin Manager's checkbox does,
    so that the desktop loads it at start-up."""
    ini = Path(profile) / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text(f"[PythonPlugins]\n{plugin_id}=true\n", encoding="utf-8")
