"""One Parquet file from row groups encoded separately, so that several threads can encode.

pyarrow's Parquet writer encodes on one thread, and the encoding is the slowest step of a
Parquet export. So each window of an export is written as a small Parquet file of its own
(one row group) on a worker thread, and the export is stitched together from them:

    b"PAR1" | row group bytes of window 1 | window 2 | ... | footer | footer length | b"PAR1"

A Parquet footer (FileMetaData, Thrift compact encoding) gives each column chunk's position
in the file. A window's row group bytes move from position 4 of its own file to wherever they
land in the export, so the combined footer is the first window's footer with every row group
listed, each position moved by the same amount, and the row count summed.

The Thrift compact protocol is read and written generically here (field id, type, value), so
fields this module does not know are kept byte for byte. Reference: the Thrift compact
protocol specification and parquet.thrift (apache/parquet-format).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MAGIC = b"PAR1"

# Field ids of parquet.thrift that hold a position in the file.
FILE_METADATA_NUM_ROWS, FILE_METADATA_ROW_GROUPS = 3, 4
ROW_GROUP_COLUMNS, ROW_GROUP_FILE_OFFSET, ROW_GROUP_ORDINAL = 1, 5, 7
COLUMN_CHUNK_POSITIONS = (2, 4, 6)        # file_offset, offset_index_offset, column_index_offset
COLUMN_CHUNK_META_DATA = 3
COLUMN_META_DATA_POSITIONS = (9, 10, 11, 14)  # data, index, dictionary page; bloom filter


@dataclass
class EncodedPart:
    body: pa.Buffer           # the row groups' bytes, as they go into the export
    row_groups: list[Any]     # their footer entries, positions as in the part's own file
    rows: int
    footer: list[Any]         # the part's whole footer (a template for the export's)


def encode_part(batch: pa.RecordBatch, writer_options: dict[str, Any]) -> EncodedPart:
    """A batch as one row group, written as a Parquet file of its own and taken apart."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, batch.schema, **writer_options) as writer:
        writer.write_batch(batch)
    data = sink.getvalue()
    footer_length = int.from_bytes(data.slice(data.size - 8, 4).to_pybytes(), "little")
    footer_start = data.size - 8 - footer_length
    footer = ThriftReader(data, footer_start).read_struct()
    row_groups = _field(footer, FILE_METADATA_ROW_GROUPS, (0, []))[1]
    return EncodedPart(body=data.slice(len(MAGIC), footer_start - len(MAGIC)),
                       row_groups=row_groups, rows=batch.num_rows, footer=footer)


class PartsFooter:
    """Collects the parts written one after another, then writes the export's footer."""

    def __init__(self) -> None:
        self.position = len(MAGIC)  # where the next part's bytes start in the export
        self.row_groups: list[Any] = []
        self.rows = 0
        self.template: list[Any] | None = None

    def add(self, part: EncodedPart) -> None:
        shift = self.position - len(MAGIC)
        for row_group in part.row_groups:
            _shift_row_group(row_group, shift, ordinal=len(self.row_groups))
            self.row_groups.append(row_group)
        self.position += part.body.size
        self.rows += part.rows
        if self.template is None:
            self.template = part.footer

    def finish(self) -> bytes:
        """The footer, its length and the closing magic (the template must be set)."""
        footer = [field for field in self.template]
        _set_field(footer, FILE_METADATA_NUM_ROWS, I64, self.rows)
        _set_field(footer, FILE_METADATA_ROW_GROUPS, LIST, (STRUCT, self.row_groups))
        encoded = ThriftWriter().write_struct(footer)
        return encoded + len(encoded).to_bytes(4, "little") + MAGIC


def _shift_row_group(row_group: list[Any], shift: int, ordinal: int) -> None:
    for field_id, _, value in row_group:
        if field_id == ROW_GROUP_COLUMNS:
            for column in value[1]:
                _shift_fields(column, COLUMN_CHUNK_POSITIONS, shift)
                meta = _field(column, COLUMN_CHUNK_META_DATA, None)
                if meta is not None:
                    _shift_fields(meta, COLUMN_META_DATA_POSITIONS, shift)
    _shift_fields(row_group, (ROW_GROUP_FILE_OFFSET,), shift)
    if _field(row_group, ROW_GROUP_ORDINAL, None) is not None:
        _set_field(row_group, ROW_GROUP_ORDINAL, I16, ordinal)


def _shift_fields(fields: list[Any], ids: tuple[int, ...], shift: int) -> None:
    for index, (field_id, kind, value) in enumerate(fields):
        if field_id in ids and kind == I64:
            fields[index] = (field_id, kind, value + shift)


def _field(fields: list[Any], field_id: int, default: Any) -> Any:
    return next((value for fid, _, value in fields if fid == field_id), default)


def _set_field(fields: list[Any], field_id: int, kind: int, value: Any) -> None:
    for index, (fid, _, _) in enumerate(fields):
        if fid == field_id:
            fields[index] = (field_id, kind, value)
            return
    fields.append((field_id, kind, value))
    fields.sort(key=lambda field: field[0])


# --- the Thrift compact protocol ----------------------------------------------------------------
# A struct is a list of (field id, type, value). Values: int for the integer types, bool for
# BOOL, float for DOUBLE, bytes for BINARY, (element type, [values]) for LIST and SET,
# (key type, value type, [(key, value)]) for MAP, a field list for STRUCT.

BOOL_TRUE, BOOL_FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)
BOOL = BOOL_TRUE  # in a field header the type says the value; elements store a byte


class ThriftReader:
    def __init__(self, data: bytes | pa.Buffer, position: int = 0):
        self.data = memoryview(data).cast("B")  # pyarrow buffers present signed bytes
        self.position = position

    def read_struct(self) -> list[Any]:
        fields: list[Any] = []
        last_id = 0
        while True:
            header = self._byte()
            if header == 0:
                return fields
            kind, delta = header & 0x0F, header >> 4
            field_id = last_id + delta if delta else _unzigzag(self._varint())
            last_id = field_id
            if kind in (BOOL_TRUE, BOOL_FALSE):
                fields.append((field_id, BOOL, kind == BOOL_TRUE))
            else:
                fields.append((field_id, kind, self._value(kind)))

    def _value(self, kind: int) -> Any:
        if kind in (BOOL_TRUE, BOOL_FALSE):  # an element of a list: one byte
            return self._byte() == 1
        if kind == BYTE:
            return self._byte()
        if kind in (I16, I32, I64):
            return _unzigzag(self._varint())
        if kind == DOUBLE:
            value = struct.unpack_from("<d", self.data, self.position)[0]
            self.position += 8
            return value
        if kind == BINARY:
            length = self._varint()
            value = bytes(self.data[self.position:self.position + length])
            self.position += length
            return value
        if kind in (LIST, SET):
            header = self._byte()
            size, element = header >> 4, header & 0x0F
            if size == 15:
                size = self._varint()
            return (element, [self._value(element) for _ in range(size)])
        if kind == MAP:
            size = self._varint()
            if size == 0:
                return (0, 0, [])
            types = self._byte()
            key, value = types >> 4, types & 0x0F
            return (key, value, [(self._value(key), self._value(value)) for _ in range(size)])
        if kind == STRUCT:
            return self.read_struct()
        raise ValueError(f"unknown Thrift compact type {kind}")

    def _byte(self) -> int:
        value = self.data[self.position]
        self.position += 1
        return value

    def _varint(self) -> int:
        result = shift = 0
        while True:
            byte = self._byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7


class ThriftWriter:
    def __init__(self) -> None:
        self.out = bytearray()

    def write_struct(self, fields: list[Any]) -> bytes:
        self._struct(fields)
        return bytes(self.out)

    def _struct(self, fields: list[Any]) -> None:
        last_id = 0
        for field_id, kind, value in fields:
            header_kind = (BOOL_TRUE if value else BOOL_FALSE) if kind == BOOL else kind
            delta = field_id - last_id
            if 0 < delta <= 15:
                self.out.append(delta << 4 | header_kind)
            else:
                self.out.append(header_kind)
                self._varint(_zigzag(field_id))
            last_id = field_id
            if kind != BOOL:
                self._value(kind, value)
        self.out.append(0)

    def _value(self, kind: int, value: Any) -> None:
        if kind in (BOOL_TRUE, BOOL_FALSE):
            self.out.append(1 if value else 2)
        elif kind == BYTE:
            self.out.append(value & 0xFF)
        elif kind in (I16, I32, I64):
            self._varint(_zigzag(value))
        elif kind == DOUBLE:
            self.out += struct.pack("<d", value)
        elif kind == BINARY:
            self._varint(len(value))
            self.out += value
        elif kind in (LIST, SET):
            element, values = value
            if len(values) < 15:
                self.out.append(len(values) << 4 | element)
            else:
                self.out.append(0xF0 | element)
                self._varint(len(values))
            for item in values:
                self._value(element, item)
        elif kind == MAP:
            key, item_kind, items = value
            self._varint(len(items))
            if items:
                self.out.append(key << 4 | item_kind)
                for map_key, item in items:
                    self._value(key, map_key)
                    self._value(item_kind, item)
        elif kind == STRUCT:
            self._struct(value)
        else:
            raise ValueError(f"unknown Thrift compact type {kind}")

    def _varint(self, value: int) -> None:
        while value > 0x7F:
            self.out.append(value & 0x7F | 0x80)
            value >>= 7
        self.out.append(value)


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)
