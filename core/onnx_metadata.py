"""Reading the metadata of an ONNX file without onnx or onnxruntime.

The plugin ships with onnxruntime only (docs/ARCHITECTURE.md, "Plugin zip"), and an inference
session would optimise the whole graph just to hand back a few strings. An ONNX file is a protobuf
`ModelProto`; its `metadata_props` (field 14) are key/value string pairs beside the graph (field 7).
This reader walks the top-level fields and seeks past all the others, so the weights are never
read, and a truncated or foreign file is recognised by fields that run past its end or do not
exist in protobuf.
"""
import io
import os

GRAPH_FIELD = 7
METADATA_FIELD = 14
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10


class NotOnnx(ValueError):
    """The file is truncated or is not a protobuf ModelProto."""


def read_metadata(path) -> dict:
    """The `metadata_props` of the ONNX model at `path` as a dict; NotOnnx if it is not one."""
    props, has_graph = {}, False
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        while stream.tell() < size:
            field, wire_type = divmod(_read_varint(stream), 8)
            if wire_type == _VARINT:
                _read_varint(stream)
            elif wire_type in (_FIXED64, _FIXED32):
                _skip(stream, 8 if wire_type == _FIXED64 else 4, size)
            elif wire_type == _LENGTH_DELIMITED:
                length = _read_varint(stream)
                if field == METADATA_FIELD:
                    key, value = _string_pair(_read(stream, length, size))
                    props[key] = value
                else:
                    has_graph |= field == GRAPH_FIELD
                    _skip(stream, length, size)
            else:
                raise NotOnnx(f"wire type {wire_type} at byte {stream.tell()}")
    if not has_graph:
        raise NotOnnx("no graph")
    return props


def _read_varint(stream) -> int:
    value = 0
    for position in range(_MAX_VARINT_BYTES):
        byte = stream.read(1)
        if not byte:
            raise NotOnnx("ends inside a number")
        value |= (byte[0] & 0x7F) << (7 * position)
        if byte[0] < 0x80:
            return value
    raise NotOnnx("a number longer than protobuf allows")


def _check_fits(stream, length: int, size: int):
    if stream.tell() + length > size:
        raise NotOnnx("a field runs past the end of the file")


def _skip(stream, length: int, size: int):
    _check_fits(stream, length, size)
    stream.seek(length, os.SEEK_CUR)


def _read(stream, length: int, size: int) -> bytes:
    _check_fits(stream, length, size)
    return stream.read(length)


def _string_pair(data: bytes) -> tuple:
    """Decode a StringStringEntryProto: key is field 1, value field 2, both UTF-8 strings."""
    stream, strings = io.BytesIO(data), {1: "", 2: ""}
    while stream.tell() < len(data):
        field, wire_type = divmod(_read_varint(stream), 8)
        if wire_type != _LENGTH_DELIMITED or field not in strings:
            raise NotOnnx("a malformed metadata entry")
        text = _read(stream, _read_varint(stream), len(data))
        try:
            strings[field] = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotOnnx("metadata that is not UTF-8 text") from exc
    return strings[1], strings[2]
