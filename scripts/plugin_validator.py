"""The upload rules of plugins.qgis.org, applied to a plugin zip before anyone uploads it.

The site refuses a zip for any of these (its validator), and flags some more in its security scan;
checking them here, in the tests and at `make package`, catches a broken release locally. URLs are
checked for form only: the site also fetches them, which needs a network this project must not
assume. Of the site's security scan, the file checks are applied (hidden files, binaries,
executable Python); its Bandit, detect-secrets and flake8 runs are not, as those tools are not
project dependencies.

Usage: `python -m sar_cloud_removal.scripts.plugin_validator dist/sar_cloud_removal.zip`
"""
import argparse
import configparser
import os
import re
import stat
import sys
import zipfile
import zlib
from pathlib import PurePosixPath
from urllib.parse import urlparse

MAX_ZIP_BYTES = 25 * 1024 * 1024
REQUIRED_FIELDS = ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                   "email", "repository", "tracker")
# Not required by the site, but what a published plugin of this kind is expected to declare.
EXPECTED_FIELDS = ("homepage", "icon", "tags", "category", "hasProcessingProvider",
                   "experimental")
URL_FIELDS = ("tracker", "repository", "homepage")
PLACEHOLDER_URLS = ("http://bugs", "http://repo", "http://homepage")
CATEGORIES = ("Raster", "Vector", "Database", "Mesh", "Web", "Plugins", "Analysis")
BOOLEANS = ("true", "false")
FORBIDDEN_DIRS = ("__MACOSX", ".git", "__pycache__")
ALLOWED_HIDDEN = (".gitignore", ".gitattributes", ".bandit", ".secrets.baseline", ".flake8")
BINARY_SUFFIXES = (".exe", ".dll", ".so", ".dylib", ".bat", ".sh", ".ps1", ".cmd", ".pyc", ".pyo")
TOP_FOLDER = re.compile(r"^[A-Za-z][A-Za-z0-9_-]+$")
VERSION = re.compile(r"^\d+(\.\d+){1,2}$")


def check_zip(path, plugin_id=None) -> list:
    """Every problem found in the zip at `path`, one sentence each; [] means it would upload.

    `plugin_id`, when given, is the folder name the zip must hold (the installed plugin's id).
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        return [f"{path} is not a readable zip file ({exc})."]
    with archive:
        problems = _check_size(path) + _check_integrity(archive)
        infos = archive.infolist()
        problems += _check_entry_names(infos)
        top, found = _top_folder(infos, plugin_id)
        problems += found
        if top is None:
            return problems
        names = {info.filename for info in infos}
        problems += _check_entry_point(archive, top, names)
        if f"{top}/LICENSE" not in names:
            problems.append(f"{top}/LICENSE is missing; the site requires a licence file.")
        if f"{top}/metadata.txt" not in names:
            problems.append(f"{top}/metadata.txt is missing.")
        else:
            problems += _check_metadata(archive.read(f"{top}/metadata.txt"), top, names)
        return problems


def _check_size(path) -> list:
    size = os.path.getsize(path)
    if size > MAX_ZIP_BYTES:
        return [f"The zip is {size / 2**20:.1f} MB; the site accepts at most "
                f"{MAX_ZIP_BYTES / 2**20:.0f} MB."]
    return []


def _check_integrity(archive) -> list:
    try:
        bad_member = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        return [f"The zip is damaged ({exc})."]
    return [] if bad_member is None else [f"{bad_member} is corrupt in the zip (CRC mismatch)."]


def _check_entry_names(infos) -> list:
    """Path tricks, caches and binaries, at any depth."""
    problems = []
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or ".." in parts or re.match(r"^[A-Za-z]:", name):
            problems.append(f"{name}: unsafe path in the zip (absolute, backslash or '..').")
            continue
        bad_dirs = [p for p in parts if p in FORBIDDEN_DIRS]
        if bad_dirs:
            problems.append(f"{name}: the zip must not contain {bad_dirs[0]} folders.")
        hidden = [p for p in parts if p.startswith(".") and p not in ALLOWED_HIDDEN
                  and p not in FORBIDDEN_DIRS]
        if hidden:
            problems.append(f"{name}: hidden files and folders are not allowed.")
        if not info.is_dir() and name.lower().endswith(BINARY_SUFFIXES):
            problems.append(f"{name}: compiled or executable files are not allowed.")
        mode = info.external_attr >> 16
        if name.endswith(".py") and mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
            problems.append(f"{name}: Python files must not be executable.")
    return problems


def _top_folder(infos, plugin_id):
    """(the single folder everything sits in, or None; the problems with it)."""
    tops = {PurePosixPath(info.filename).parts[0] for info in infos if info.filename.strip("/")}
    files_at_top = [info.filename for info in infos
                    if not info.is_dir() and len(PurePosixPath(info.filename).parts) == 1]
    if not tops or files_at_top:
        return None, ["The zip must hold one plugin folder with every file inside it."]
    if len(tops) > 1:
        return None, [f"The zip holds several top folders ({', '.join(sorted(tops))}); it "
                      f"must hold only the plugin folder."]
    top = tops.pop()
    problems = []
    if not TOP_FOLDER.match(top) or not top.isidentifier():
        problems.append(f"The plugin folder '{top}' must be a Python identifier.")
    if plugin_id is not None and top != plugin_id:
        problems.append(f"The plugin folder is '{top}', not the plugin id '{plugin_id}'.")
    return top, problems


def _check_entry_point(archive, top, names) -> list:
    init = f"{top}/__init__.py"
    if init not in names:
        return [f"{init} is missing; QGIS imports the plugin through it."]
    if not re.search(rb"^def classFactory\(", archive.read(init), re.MULTILINE):
        return [f"{init} does not define classFactory(iface), which QGIS calls to load it."]
    return []


def _check_metadata(raw: bytes, top, names) -> list:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return ["metadata.txt is not UTF-8."]
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # metadata keys are case-sensitive (qgisMinimumVersion)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        return [f"metadata.txt cannot be parsed ({exc.message.splitlines()[0]})."]
    if not parser.has_section("general"):
        return ["metadata.txt has no [general] section."]
    meta = {key: value.strip() for key, value in parser.items("general")}
    problems = [f"metadata.txt lacks the mandatory field '{key}'."
                for key in REQUIRED_FIELDS if not meta.get(key)]
    problems += [f"metadata.txt lacks the field '{key}'."
                 for key in EXPECTED_FIELDS if not meta.get(key)]
    problems += _check_metadata_values(meta, top, names)
    return problems


def _check_metadata_values(meta, top, names) -> list:
    problems = []
    for key in URL_FIELDS:
        url = meta.get(key)
        if url and not _is_real_url(url):
            problems.append(f"metadata.txt: {key}={url} is not an http(s) URL of a real page.")
    if "/" in meta.get("author", ""):
        problems.append("metadata.txt: the author must not contain '/'.")
    email = meta.get("email", "")
    if email and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email):
        problems.append(f"metadata.txt: email={email} is not an e-mail address.")
    for key in ("version", "qgisMinimumVersion", "qgisMaximumVersion"):
        if meta.get(key) and not VERSION.match(meta[key]):
            problems.append(f"metadata.txt: {key}={meta[key]} is not a version like 1.2.3.")
    if _version_tuple(meta.get("qgisMinimumVersion")) < (3, 0):
        problems.append("metadata.txt: qgisMinimumVersion must be 3.0 or later.")
    if meta.get("qgisMaximumVersion") and VERSION.match(meta["qgisMaximumVersion"]) and \
            _version_tuple(meta["qgisMaximumVersion"]) < _version_tuple(
                meta.get("qgisMinimumVersion")):
        problems.append("metadata.txt: qgisMaximumVersion is below qgisMinimumVersion.")
    if meta.get("category") and meta["category"] not in CATEGORIES:
        problems.append(f"metadata.txt: category={meta['category']} is not one of "
                        f"{', '.join(CATEGORIES)}.")
    if meta.get("hasProcessingProvider") and meta["hasProcessingProvider"] not in ("yes", "no"):
        problems.append("metadata.txt: hasProcessingProvider must be yes or no.")
    for key in ("experimental", "deprecated", "server"):
        if meta.get(key) and meta[key].lower() not in BOOLEANS:
            problems.append(f"metadata.txt: {key} must be True or False.")
    if meta.get("icon") and f"{top}/{meta['icon']}" not in names:
        problems.append(f"metadata.txt: icon={meta['icon']} is not in the zip.")
    if "supportsQt6" in meta:
        problems.append("metadata.txt: supportsQt6 is deprecated; declare qgisMaximumVersion.")
    return problems


def _is_real_url(url) -> bool:
    parsed = urlparse(url)
    return (parsed.scheme in ("http", "https") and bool(parsed.netloc)
            and url.rstrip("/") not in PLACEHOLDER_URLS)


def _version_tuple(text) -> tuple:
    """(3, 22) for '3.22'; (0,) for anything unparsable, so comparisons stay total."""
    if not text or not VERSION.match(text):
        return (0,)
    return tuple(int(part) for part in text.split("."))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zip", help="the plugin zip to check")
    parser.add_argument("--plugin-id", help="the folder name the zip must hold")
    args = parser.parse_args(argv)
    problems = check_zip(args.zip, args.plugin_id)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{args.zip}: passes the plugins.qgis.org upload rules")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
