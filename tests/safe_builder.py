"""Small Sentinel-2 products in the real on-disk formats, written from real pixels.

- `write_safe`: an L1C (or L2A) `.SAFE` folder as the Copernicus hub delivers it (SAFE compact
  naming, `MTD_MSIL1C.xml` at the top, one granule with its `MTD_TL.xml`, 13 JPEG2000 bands at
  their native 10 / 20 / 60 m resolution), for a pre-2022 or a post-2022 processing baseline.
  GDAL's SENTINEL2 driver opens it, as QGIS does.
- `zip_product`: the `.zip` the hub actually serves.
- `native_bands`: the 13 bands of a real 13-band 10 m image brought to their native resolutions
  (block means of 2 x 2 and 6 x 6 pixels), the form they have in a product.

Import it from a test as `import safe_builder` (pytest puts tests/ on sys.path).
"""
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12")
RESOLUTION = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
              "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20}
# Lossless JPEG2000, as the L1C band files are (reversible 5/3 wavelet, no colour transform).
JP2_OPTIONS = dict(driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES", YCBCR420="NO")

PRE_2022 = dict(baseline="02.09", date="20190402T103021", generated="20190402T110907",
                spacecraft="S2A")
POST_2022 = dict(baseline="04.00", date="20220315T103021", generated="20220315T124506",
                 spacecraft="S2B")


def native_bands(stack: np.ndarray) -> dict:
    """{band: (rows, cols) uint16} at native resolution from a 13-band 10 m stack.

    The stack is cropped to a multiple of 60 m; 20 m and 60 m bands are the rounded means of
    2 x 2 and 6 x 6 blocks of the real 10 m pixels.
    """
    rows, cols = (size - size % 6 for size in stack.shape[1:])
    bands = {}
    for index, name in enumerate(BANDS):
        factor = RESOLUTION[name] // 10
        band = stack[index, :rows, :cols].astype(np.float64)
        band = band.reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))
        bands[name] = np.rint(band).astype(np.uint16)
    return bands


def upsampled(bands: dict) -> np.ndarray:
    """The 13-band stack on the 10 m grid by nearest neighbour, what a product must read as."""
    out = []
    for name in BANDS:
        factor = RESOLUTION[name] // 10
        out.append(np.repeat(np.repeat(bands[name], factor, axis=0), factor, axis=1))
    return np.stack(out)


def _write_jp2(path: Path, band: np.ndarray, crs, transform) -> None:
    with rasterio.open(path, "w", width=band.shape[1], height=band.shape[0], count=1,
                       dtype="uint16", crs=crs, transform=transform, **JP2_OPTIONS) as dst:
        dst.write(band, 1)


def _product_xml(level, baseline, offset, uri, image_files) -> str:
    product_type = "S2MSI1C" if level == "L1C" else "S2MSI2A"
    root = "Level-1C_User_Product" if level == "L1C" else "Level-2A_User_Product"
    tag = "RADIO_ADD_OFFSET" if level == "L1C" else "BOA_ADD_OFFSET"
    offsets = ""
    if offset:
        items = "".join(f'\n        <{tag} band_id="{i}">-{offset}</{tag}>'
                        for i in range(len(BANDS)))
        list_tag = "Radiometric_Offset_List" if level == "L1C" else "BOA_ADD_OFFSET_VALUES_LIST"
        offsets = f"\n      <{list_tag}>{items}\n      </{list_tag}>"
    files = "".join(f"\n            <IMAGE_FILE>{name}</IMAGE_FILE>" for name in image_files)
    spectral = "".join(
        f'\n        <Spectral_Information bandId="{i}" physicalBand="{name.replace("B0", "B")}">'
        f"<RESOLUTION>{RESOLUTION[name]}</RESOLUTION></Spectral_Information>"
        for i, name in enumerate(BANDS))
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{root} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_{level.replace("L", "Level-")}.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_URI>{uri}</PRODUCT_URI>
      <PROCESSING_LEVEL>{"Level-1C" if level == "L1C" else "Level-2A"}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>{product_type}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <Query_Options completeSingleTile="true">
        <PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT>
      </Query_Options>
      <Product_Organisation>
        <Granule_List>
          <Granule datastripIdentifier="DS" granuleIdentifier="TL" imageFormat="JPEG2000">{files}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>{offsets}
      <Spectral_Information_List>{spectral}
      </Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:{root}>
"""


def _tile_xml(level, epsg, sizes, origin) -> str:
    size = "".join(f'\n      <Size resolution="{res}"><NROWS>{rows}</NROWS><NCOLS>{cols}</NCOLS>'
                   f"</Size>" for res, (rows, cols) in sorted(sizes.items()))
    position = "".join(f'\n      <Geoposition resolution="{res}"><ULX>{origin[0]}</ULX>'
                       f"<ULY>{origin[1]}</ULY><XDIM>{res}</XDIM><YDIM>-{res}</YDIM>"
                       f"</Geoposition>" for res in sorted(sizes))
    root = "Level-1C_Tile_ID" if level == "L1C" else "Level-2A_Tile_ID"
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{root} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_{root}_Metadata.xsd">
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>WGS84 / UTM zone {epsg % 100}N</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{epsg}</HORIZONTAL_CS_CODE>{size}{position}
    </Tile_Geocoding>
  </n1:Geometric_Info>
</n1:{root}>
"""


def write_safe(folder, bands: dict, epsg: int, origin, tile="31UFQ", version=PRE_2022,
               offset=0, level="L1C") -> Path:
    """Write a one-granule SAFE product of `bands` ({name: native array}); returns the .SAFE.

    `origin` is the upper-left corner (x, y) in EPSG:`epsg`; `offset` is the RADIO_ADD_OFFSET
    the metadata declares (0: none declared, as before baseline 04.00).
    """
    v = version
    product = "MSIL1C" if level == "L1C" else "MSIL2A"
    uri = (f"{v['spacecraft']}_{product}_{v['date']}_N{v['baseline'].replace('.', '')}_R108_"
           f"T{tile}_{v['generated']}.SAFE")
    safe = Path(folder) / uri
    granule = f"{level}_T{tile}_A019735_{v['date']}"
    img = safe / "GRANULE" / granule / "IMG_DATA"
    img.mkdir(parents=True)
    image_files, sizes = [], {}
    for name in BANDS:
        if level == "L2A" and name == "B10":
            continue   # L2A products have no cirrus band
        res = RESOLUTION[name]
        stem = f"T{tile}_{v['date']}_{name}"
        _write_jp2(img / f"{stem}.jp2", bands[name], f"EPSG:{epsg}", from_origin(*origin, res, res))
        image_files.append(f"GRANULE/{granule}/IMG_DATA/{stem}")
        sizes[res] = bands[name].shape
    for name in ("AUX_DATA", "QI_DATA"):
        (safe / "GRANULE" / granule / name).mkdir()
    (safe / "DATASTRIP").mkdir()
    (safe / f"MTD_MSI{level}.xml").write_text(
        _product_xml(level, v["baseline"], offset, uri, image_files), encoding="utf-8")
    (safe / "GRANULE" / granule / "MTD_TL.xml").write_text(
        _tile_xml(level, epsg, sizes, origin), encoding="utf-8")
    (safe / "manifest.safe").write_text("<xfdu:XFDU/>\n", encoding="utf-8")
    return safe


def zip_product(safe: Path) -> Path:
    """Zip a .SAFE folder as the hub serves it: `<name>.zip` holding `<name>.SAFE/...`."""
    archive = safe.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for path in sorted(safe.rglob("*")):
            out.write(path, path.relative_to(safe.parent).as_posix())
    return archive
