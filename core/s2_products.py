"""Sentinel-2 as users download it, read as the 13-band 10 m stack the network takes.

Accepted besides a 13-band raster:

- an L1C product as the Copernicus hub delivers it: the `.SAFE` folder, its `.zip`, or its
  `MTD_MSIL1C.xml` (also GDAL's SENTINEL2 sub-dataset names, which QGIS shows as the 10 m /
  20 m / 60 m sub-layers of a product);
- a folder of one GeoTIFF (or JPEG2000) per band, as Earth Engine and most download tools
  export them, with B1 … B12 and B8A named in the file names (and optionally Earth Engine's
  `metadata.json` beside them).

The bands are stacked on the 10 m grid on the fly by a GDAL VRT (nearest neighbour for the
20 m and 60 m bands, as Earth Engine's exports that SEN12MS-CR was made from): no copy of the
pixels is ever written. The VRT carries what the metadata says about the radiometric offset
(`PROCESSING_BASELINE`, `RADIO_ADD_OFFSET`), which `core.sensors` reads before any guess.
L2A (surface reflectance) products are refused: the networks take L1C.

rasterio is imported only when a product is opened: the QGIS face asks this module about layer
names when the plugin loads, before it knows rasterio is there.
"""
import json
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Optional
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from .errors import UserError

S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
BAND_FILE_SUFFIXES = (".tif", ".tiff", ".jp2")
L1C_METADATA = ("MTD_MSIL1C.xml",)
L2A_METADATA = ("MTD_MSIL2A.xml",)
SENTINEL2_SUBDATASET = re.compile(r"^SENTINEL2_(L1C|L2A|L1B)(?:_TILE)?:(.*?)(?::[^:/\\]*:[^:/\\]*)?$")
# A band token in a file name: B1 … B12, B01 … B09, B8A / B08A, not part of a longer word.
_BAND_TOKEN = re.compile(r"(?<![A-Za-z0-9])B0?(1[0-2]|[1-9])(A?)(?![A-Za-z0-9])", re.IGNORECASE)
WHERE_TO_GET_L1C = ("download the Level-1C product of the same date (S2MSI1C, from the "
                    "Copernicus Data Space Ecosystem, dataspace.copernicus.eu, or Earth Engine's "
                    "COPERNICUS/S2_HARMONIZED collection)")


def _l2a_refusal(path) -> UserError:
    return UserError(f"The S2 input {path} is a Level-2A (surface reflectance) product, but the "
                     f"network needs Level-1C (13 bands, top-of-atmosphere): {WHERE_TO_GET_L1C}.")


def is_product_path(path) -> bool:
    """Whether `path` names a product or band folder rather than a single raster file."""
    text = str(path)
    if product_of_subdataset(text) is not None:
        return True
    p = Path(text)
    return p.is_dir() or p.suffix.lower() in (".zip", ".xml", ".safe")


# A band file inside a product, as QGIS lists a zipped product's contents:
# .../X.SAFE/GRANULE/<granule>/IMG_DATA/[R10m/]<tile>_<date>_B04[_10m].jp2
_BAND_IN_PRODUCT = re.compile(r"^(.*?\.SAFE)/GRANULE/[^/]+/IMG_DATA/(?:R\d+m/)?[^/]+\.jp2$",
                              re.IGNORECASE)


def product_of_subdataset(name: str) -> Optional[str]:
    """The product a GDAL name belongs to, or None for other names.

    `SENTINEL2_L1C:/data/X.SAFE/MTD_MSIL1C.xml:10m:EPSG_32631` -> `/data/X.SAFE/MTD_MSIL1C.xml`;
    a product inside a zip (`/vsizip//data/X.zip/X.SAFE/MTD_MSIL1C.xml`) -> `/data/X.zip`; a
    band file of a product (`/data/X.SAFE/GRANULE/G/IMG_DATA/T31UFQ_..._B04.jp2`, what QGIS
    3.22 lists inside a zipped product) -> the product.
    """
    text = str(name).replace("\\", "/")
    if text.startswith("/vsizip/SENTINEL2_"):   # QGIS 3.22 lists zipped sub-datasets so
        text = text[len("/vsizip/"):]
    match = SENTINEL2_SUBDATASET.match(text)
    if match:
        path = match.group(2)
    else:
        band = _BAND_IN_PRODUCT.match(text)
        if not band:
            return None
        path = band.group(1)
    if path.startswith("/vsizip/"):
        inner = path[len("/vsizip/"):]
        cut = inner.lower().find(".zip")
        if cut >= 0:
            return inner[:cut + 4]
    return path


def product_level(name: str) -> Optional[str]:
    """"L1C", "L2A" or "L1B" for a name `product_of_subdataset` recognises, else None."""
    if product_of_subdataset(name) is None:
        return None
    text = str(name)
    for level in ("L1C", "L2A", "L1B"):
        if f"SENTINEL2_{level}" in text or f"MSI{level}" in text.upper():
            return level
    return "L1C"


def _band_of(filename: str) -> Optional[str]:
    tokens = {f"B{int(m.group(1))}{m.group(2).upper()}" for m in _BAND_TOKEN.finditer(filename)}
    tokens &= set(S2_BANDS)
    return tokens.pop() if len(tokens) == 1 else None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find_text(root, name: str) -> Optional[str]:
    for element in root.iter():
        if _local(element.tag) == name and element.text:
            return element.text.strip()
    return None


def _l1c_metadata(root, path) -> dict:
    """The product metadata the engine uses: processing baseline, offsets, level."""
    level = _find_text(root, "PROCESSING_LEVEL") or ""
    product_type = _find_text(root, "PRODUCT_TYPE") or ""
    if "2A" in level or "2A" in product_type:
        raise _l2a_refusal(path)
    tags = {"S2_METADATA_SOURCE": "the product's MTD_MSIL1C.xml"}
    baseline = _find_text(root, "PROCESSING_BASELINE")
    if baseline:
        tags["PROCESSING_BASELINE"] = baseline
    offsets = {element.text.strip() for element in root.iter()
               if _local(element.tag) == "RADIO_ADD_OFFSET" and element.text}
    if len(offsets) > 1:
        raise UserError(f"The S2 product {path} declares different radiometric offsets per band "
                        f"({', '.join(sorted(offsets))}), which the network cannot take; set the "
                        f"S2 offset explicitly.")
    if offsets:
        tags["RADIO_ADD_OFFSET"] = offsets.pop()
    for name in ("PRODUCT_TYPE", "PROCESSING_LEVEL", "PRODUCT_URI"):
        value = _find_text(root, name)
        if value:
            tags[name] = value
    return tags


def _band_files_from_mtd(root, base: str, path) -> dict:
    """{band: GDAL path of its JPEG2000 file} from the IMAGE_FILE list of MTD_MSIL1C.xml."""
    files, granules = {}, set()
    for element in root.iter():
        if _local(element.tag) != "IMAGE_FILE" or not element.text:
            continue
        relative = element.text.strip()
        band = _band_of(relative.rsplit("/", 1)[-1])
        if band is None:
            continue   # TCI and other files
        granules.add(relative.split("/")[1] if "/" in relative else "")
        files[band] = f"{base}/{relative}.jp2"
    if len(granules) > 1:
        raise UserError(f"The S2 product {path} holds {len(granules)} tiles (granules), an old "
                        f"multi-tile product; give one tile, converted with gdal_translate "
                        f"from one of its sub-datasets.")
    if not files:
        raise UserError(f"The S2 product {path} lists no band files in its metadata; give the "
                        f"product as downloaded (the .SAFE folder or its .zip).")
    return files


def _open_safe_folder(safe: Path, path):
    for name in L2A_METADATA:
        if (safe / name).is_file():
            raise _l2a_refusal(path)
    mtd = next((safe / name for name in L1C_METADATA if (safe / name).is_file()), None)
    if mtd is None:
        return None
    root = _parse_xml(mtd.read_bytes(), path)
    return _band_files_from_mtd(root, str(safe.resolve()), path), _l1c_metadata(root, path)


def _parse_xml(data: bytes, path):
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError:
        raise UserError(f"The S2 product metadata in {path} is not valid XML (a damaged "
                        f"download?); download the product again.") from None


def _open_zip(archive: Path, path):
    try:
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            def metadata(candidates):
                return sorted((n for n in names if n.rsplit("/", 1)[-1] in candidates
                               and n.count("/") <= 1), key=len)
            if metadata(L2A_METADATA):
                raise _l2a_refusal(path)
            found = metadata(L1C_METADATA)
            if not found:
                raise UserError(f"The zip file {path} holds no Sentinel-2 L1C product (no "
                                f"MTD_MSIL1C.xml); give the .zip as downloaded from the "
                                f"Copernicus hub, or the .SAFE folder.")
            root = _parse_xml(z.read(found[0]), path)
    except zipfile.BadZipFile:
        raise UserError(f"The zip file {path} is damaged or not a zip; download the product "
                        f"again.") from None
    folder = found[0].rsplit("/", 1)[0] if "/" in found[0] else ""
    base = f"/vsizip/{archive.resolve()}" + (f"/{folder}" if folder else "")
    return _band_files_from_mtd(root, base, path), _l1c_metadata(root, path)


def _gee_metadata(folder: Path, path) -> dict:
    """What an Earth Engine export's metadata.json says about level and offset."""
    meta_file = folder / "metadata.json"
    if not meta_file.is_file():
        return {}
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    properties = meta.get("properties") or {}
    collection = str(meta.get("id", "")).rsplit("/", 1)[0]
    product = str(properties.get("PRODUCT_ID", ""))
    if "S2_SR" in collection or "MSIL2A" in product:
        raise _l2a_refusal(path)
    tags = {"S2_METADATA_SOURCE": "the export's metadata.json"}
    baseline = properties.get("PROCESSING_BASELINE")
    if baseline:
        tags["PROCESSING_BASELINE"] = str(baseline)
    if collection.endswith("HARMONIZED"):
        # Earth Engine removed the offset of baseline 04.00+ scenes in its harmonized collection.
        tags["RADIO_ADD_OFFSET"] = "0"
        tags["S2_METADATA_SOURCE"] += f" (collection {collection}, offset already removed)"
    if product:
        tags["PRODUCT_ID"] = product
    return tags


def _band_folder(folder: Path, path):
    """{band: file} of a one-file-per-band folder, or None when it holds no band files."""
    files, seen = {}, {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.suffix.lower() not in BAND_FILE_SUFFIXES \
                or not entry.is_file():
            continue
        band = _band_of(entry.stem)
        if band is None:
            continue
        if band in files:
            raise UserError(f"The S2 folder {path} holds two files for band {band} "
                            f"({files[band].name}, {entry.name}); keep one file per band.")
        files[band] = entry
        seen[band] = entry.name
    if not files:
        return None
    missing = [band for band in S2_BANDS if band not in files]
    if missing == ["B10"] or "MSIL2A" in folder.name.upper() or any(
            "MSIL2A" in name.upper() for name in seen.values()):
        raise _l2a_refusal(path)
    if missing:
        raise UserError(f"The S2 folder {path} lacks band file(s) {', '.join(missing)}; the "
                        f"network needs all 13 L1C bands ({', '.join(S2_BANDS)}), named in the "
                        f"file names (such as B8A.tif).")
    return {band: str(file.resolve()) for band, file in files.items()}, _gee_metadata(folder,
                                                                                        path)


def _locate(path):
    """({band: GDAL path}, metadata tags) of the product or band folder at `path`."""
    text = str(path)
    sub = product_of_subdataset(text)
    if sub is not None:
        if product_level(text) == "L2A":
            raise _l2a_refusal(sub)
        text = sub
    p = Path(text)
    if not p.exists():
        raise UserError(f"The S2 file {path} does not exist; check the path.")
    if p.is_file() and p.suffix.lower() == ".zip":
        return _open_zip(p, path)
    if p.is_file() and p.suffix.lower() == ".xml":
        if p.name in L2A_METADATA:
            raise _l2a_refusal(path)
        if p.name not in L1C_METADATA:
            raise UserError(f"The S2 input {path} is an XML file but not a Sentinel-2 L1C "
                            f"product's MTD_MSIL1C.xml; give that file, the .SAFE folder or its "
                            f".zip.")
        return _open_safe_folder(p.parent, path)
    if p.is_dir():
        found = _open_safe_folder(p, path) or _band_folder(p, path)
        if found is None:
            raise UserError(f"The S2 folder {path} holds neither a Sentinel-2 product "
                            f"(MTD_MSIL1C.xml) nor band files named B1 … B12; give a .SAFE "
                            f"folder, its .zip, a folder of one file per band, or a 13-band "
                            f"raster.")
        return found
    raise UserError(f"The S2 input {path} is not a Sentinel-2 product; give a .SAFE folder, its "
                    f".zip, its MTD_MSIL1C.xml, a folder of one file per band, or a 13-band "
                    f"raster.")


def _open_band(file: str, band: str, path):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(file)
    except RasterioIOError:
        raise UserError(f"The band {band} of the S2 input {path} ({file}) cannot be read (a "
                        f"damaged or incomplete download?); download the product again.") from None


def build_vrt(files: dict, tags: dict, path) -> str:
    """The VRT XML that stacks the 13 band files on the grid of the finest band."""
    infos = {}
    for band in S2_BANDS:
        with _open_band(files[band], band, path) as dataset:
            if dataset.count != 1 or dataset.crs is None:
                raise UserError(f"The band file {files[band]} of the S2 input {path} is not one "
                                f"georeferenced band; give the band files as exported.")
            infos[band] = (dataset.crs, dataset.transform, dataset.width, dataset.height,
                           dataset.dtypes[0])
    crs = infos["B2"][0]
    if any(info[0] != crs for info in infos.values()):
        raise UserError(f"The band files of the S2 input {path} are not all in the same CRS; "
                        f"export all bands in one CRS.")
    finest = min(S2_BANDS, key=lambda band: abs(infos[band][1].a))
    _, grid, width, height, _ = infos[finest]
    dtypes = {info[4] for info in infos.values()}
    dtype = dtypes.pop() if len(dtypes) == 1 else "float32"
    gdal_type = {"uint16": "UInt16", "int16": "Int16", "uint8": "Byte", "float32": "Float32",
                 "int32": "Int32", "uint32": "UInt32", "float64": "Float64"}.get(dtype, "Float32")
    bands_xml = []
    for number, band in enumerate(S2_BANDS, start=1):
        _, transform, w, h, _ = infos[band]
        x_off = (transform.c - grid.c) / grid.a
        y_off = (transform.f - grid.f) / grid.e
        x_size = w * transform.a / grid.a
        y_size = h * transform.e / grid.e
        bands_xml.append(
            f'<VRTRasterBand dataType="{gdal_type}" band="{number}">'
            f"<Description>{band}</Description><NoDataValue>0</NoDataValue>"
            f'<SimpleSource resampling="nearest">'
            f'<SourceFilename relativeToVRT="0">{escape(files[band])}</SourceFilename>'
            f"<SourceBand>1</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{x_off!r}" yOff="{y_off!r}" xSize="{x_size!r}" ySize="{y_size!r}"/>'
            f"</SimpleSource></VRTRasterBand>")
    metadata = "".join(f'<MDI key="{escape(key)}">{escape(str(value))}</MDI>'
                       for key, value in tags.items())
    geotransform = ", ".join(repr(v) for v in (grid.c, grid.a, grid.b, grid.f, grid.d, grid.e))
    return (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
            f"<SRS>{escape(crs.to_wkt())}</SRS><GeoTransform>{geotransform}</GeoTransform>"
            f"<Metadata>{metadata}</Metadata>{''.join(bands_xml)}</VRTDataset>")


class ProductDataset:
    """A rasterio dataset over a product's VRT that answers to the product's own name.

    Everything else (read, tags, transform, …) is the VRT dataset's; `band_files` lists the
    files read, so outputs can be kept from overwriting them.
    """

    def __init__(self, dataset, name: str, band_files):
        self._dataset = dataset
        self.name = name
        self.band_files = list(band_files)

    def __getattr__(self, attribute):
        return getattr(self._dataset, attribute)

    def close(self) -> None:
        self._dataset.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_product(path) -> ProductDataset:
    """Open a SAFE folder / zip / MTD_MSIL1C.xml / band folder as a 13-band 10 m dataset."""
    import rasterio

    files, tags = _locate(path)
    dataset = rasterio.open(build_vrt(files, tags, path))
    local = [f for f in files.values() if not f.startswith("/vsi")]
    return ProductDataset(dataset, str(path), local or [str(Path(str(path)))])
