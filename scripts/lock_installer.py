"""Write `ui/installer-requirements.txt`: the exact packages the plugin's installer may install,
each with the sha256 of every file PyPI publishes for that release (`pip --require-hashes`).

Run it by hand after changing a pin (it asks PyPI's JSON Simple API, one request per package):
`python -m sar_cloud_removal.scripts.lock_installer`. The plugin never runs it.
"""
import argparse
import json
import urllib.request
from pathlib import Path

INDEX = "https://pypi.org/simple"
# import name -> the distributions that provide it (first) and what it imports at run time.
# onnxruntime's declared dependencies (flatbuffers, packaging, protobuf) serve its training
# and conversion tools, not `import onnxruntime` and InferenceSession, which is all the engine
# uses; rasterio's are what it and its `rio` entry points import.
LOCKED = {
    "onnxruntime": "1.32.0",
    "onnxruntime-gpu": "1.31.1",
    "rasterio": "1.3.11",
    "affine": "2.4.0",
    "attrs": "25.3.0",
    "certifi": "2025.8.3",
    "click": "8.1.8",
    "cligj": "0.7.2",
    "click-plugins": "1.1.1",
    "snuggs": "1.4.7",
    "pyparsing": "3.2.3",
}
OUT = Path(__file__).resolve().parents[1] / "ui" / "installer-requirements.txt"


def release_hashes(name: str, version: str) -> list:
    request = urllib.request.Request(f"{INDEX}/{name}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    prefix = name.replace("-", "_").lower() + "-" + version + "-"
    hashes = sorted({f["hashes"]["sha256"] for f in files
                     if f["filename"].lower().startswith(prefix)
                     and f["filename"].endswith(".whl") and not f.get("yanked")})
    if not hashes:
        raise SystemExit(f"no wheels of {name}=={version} on {INDEX}")
    return hashes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    lines = ["# The plugin's installer installs only these, pinned with the sha256 of every wheel",
             f"# PyPI has for them ({INDEX}); regenerate with "
             "python -m sar_cloud_removal.scripts.lock_installer", ""]
    for name, version in LOCKED.items():
        hashes = release_hashes(name, version)
        lines.append(f"{name}=={version} \\")
        lines += [f"    --hash=sha256:{digest} \\" for digest in hashes[:-1]]
        lines.append(f"    --hash=sha256:{hashes[-1]}")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(LOCKED)} packages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
