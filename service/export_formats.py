"""The export formats (SPEC 3.5) as head, windows and tail, so that windows can be encoded on
several threads at once and put in order afterwards.

NDJSON and CSV windows are their lines; Arrow is the IPC stream format (schema message, one
record batch message per window, end-of-stream marker); Parquet windows are row groups written
as files of their own and stitched under one footer (parquet_parts). An end marker comes only
in the tail, after the last window.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from .company_columns import FEW_VALUES
from .parquet_parts import MAGIC, EncodedPart, PartsFooter, encode_part

# Litestar appends "; charset=utf-8" to every text/ type, so CSV is sent as
# "text/csv; charset=utf-8"; giving the charset here too repeated it.
MEDIA_TYPES = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
ROW_GROUP_ROWS = 32 * 1024  # Parquet's write batch: a window's rows at most


@dataclass
class Encoded:
    """One window in a format's bytes (Parquet: a part, see parquet_parts)."""

    rows: int
    data: bytes | pa.Buffer | None = None
    part: EncodedPart | None = None
    batch: pa.RecordBatch | None = None   # the stream keeps it while a limit may cut it


class FormatEncoder:
    """A format as head, windows and tail. `encode` runs on worker threads, any number at once;
    `head`, `add` (each window's bytes, in order) and `tail` run on the stream's thread.

    `empty` is the records' shape with no rows: its schema, and the dictionaries its coded
    columns share with every window (the snapshot's vocabularies)."""

    def __init__(self, empty: pa.RecordBatch):
        self.empty = empty
        self.schema = empty.schema

    def head(self) -> bytes:
        return b""

    def encode(self, batch: pa.RecordBatch) -> Encoded:
        raise NotImplementedError

    def add(self, encoded: Encoded) -> bytes | pa.Buffer:
        return encoded.data

    def tail(self) -> bytes:
        return b""


class NdjsonEncoder(FormatEncoder):
    def encode(self, batch: pa.RecordBatch) -> Encoded:
        # Each value is one JSON line ending in "\n": the string column's data buffer, between
        # its first and last offset, is exactly the lines one after another.
        lines = batch.column(0)
        if len(lines) == 0:
            return Encoded(0, b"")
        _, offsets, data = lines.buffers()
        width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
        positions = np.frombuffer(offsets, dtype=width)
        start, end = positions[lines.offset], positions[lines.offset + len(lines)]
        return Encoded(len(lines), data.slice(int(start), int(end - start)))


class CsvEncoder(FormatEncoder):
    def head(self) -> bytes:
        return self._csv(self.schema.empty_table(), header=True).to_pybytes()

    def encode(self, batch: pa.RecordBatch) -> Encoded:
        return Encoded(batch.num_rows, self._csv(batch, header=False))

    @staticmethod
    def _csv(rows: pa.RecordBatch | pa.Table, header: bool) -> pa.Buffer:
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(rows, sink, pa_csv.WriteOptions(include_header=header,
                                                         quoting_style="needed"))
        return sink.getvalue()


class ArrowEncoder(FormatEncoder):
    """The Arrow IPC stream format: the schema message and the dictionary messages, one record
    batch message per window (written on the workers), and the end-of-stream marker.

    The coded columns (company tld, industry, function, location, technologies) are Arrow
    dictionaries of the snapshot's vocabularies: sent once in the head, then each window
    carries only its codes, which halves what an export sends (README, Exports)."""

    END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"

    def head(self) -> bytes:
        # The IPC writer puts the dictionaries before the first batch: the empty one here, a
        # zero-row batch that readers take as it is. Not closed, so no end-of-stream yet.
        sink = pa.BufferOutputStream()
        pa.ipc.new_stream(sink, self.schema).write_batch(self.empty)
        return sink.getvalue().to_pybytes()

    def encode(self, batch: pa.RecordBatch) -> Encoded:
        return Encoded(batch.num_rows, batch.serialize())

    def tail(self) -> bytes:
        return self.END_OF_STREAM


class ParquetEncoder(FormatEncoder):
    """Each window is one row group, encoded on a worker as a Parquet file of its own; the
    stream is the magic, the row groups and one footer listing them all (parquet_parts).

    Uncompressed, with dictionaries for the few-valued columns only and no statistics: the
    settings that encode fastest (README, Export). The Arrow schema is not stored, so readers
    see text columns as text rather than as the dictionaries they were written from."""

    def __init__(self, empty: pa.RecordBatch):
        super().__init__(empty)
        few = [path for path in _leaf_paths(self.schema)
               if path.rsplit(".", 1)[-1] in ("department", "seniority", "job_title",
                                              *FEW_VALUES) or "technologies" in path]
        self.options = {"compression": "none", "use_dictionary": few,
                        "write_statistics": False, "store_schema": False,
                        "write_batch_size": ROW_GROUP_ROWS}
        self.footer = PartsFooter()

    def head(self) -> bytes:
        return MAGIC

    def encode(self, batch: pa.RecordBatch) -> Encoded:
        return Encoded(batch.num_rows, part=encode_part(batch, self.options))

    def add(self, encoded: Encoded) -> bytes:
        self.footer.add(encoded.part)
        return encoded.part.body

    def tail(self) -> bytes:
        if self.footer.template is None:  # no rows: the rest of an empty file of the schema
            sink = io.BytesIO()
            pq.ParquetWriter(sink, self.schema, **self.options).close()
            return sink.getvalue()[len(MAGIC):]
        return self.footer.finish()


def _leaf_paths(schema: pa.Schema) -> list[str]:
    paths: list[str] = []

    def walk(field: pa.Field, prefix: str) -> None:
        if pa.types.is_struct(field.type):
            for child in field.type:
                walk(child, f"{prefix}{field.name}.")
        elif pa.types.is_list(field.type):
            paths.append(f"{prefix}{field.name}.list.element")
        else:
            paths.append(prefix + field.name)

    for field in schema:
        walk(field, "")
    return paths


def encoder_for(fmt: str, empty: pa.RecordBatch) -> FormatEncoder:
    return {"ndjson": NdjsonEncoder, "csv": CsvEncoder, "arrow": ArrowEncoder,
            "parquet": ParquetEncoder}[fmt](empty)
