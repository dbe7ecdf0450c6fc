"""Parquet stitched from parts (service/parquet_parts.py), read back by pyarrow and by DuckDB."""

from __future__ import annotations

import datetime as dt
import io

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.parquet_parts import MAGIC, PartsFooter, ThriftReader, ThriftWriter, encode_part

OPTIONS = {"compression": "none", "use_dictionary": ["tags.list.element", "place.country"],
           "write_statistics": False, "store_schema": False}


def records(start: int, count: int) -> pa.RecordBatch:
    """Nested, nullable, listed and dictionary columns, like an export's."""
    countries = pa.array(["Ísland", "Deutschland", "日本"])
    return pa.RecordBatch.from_pydict({
        "id": [f"c{n:06d}" for n in range(start, start + count)],
        "note": [None if n % 7 == 0 else "x" * (n % 50) + "\"\\\n" for n in range(start,
                                                                             start + count)],
        "tags": [[f"t{n % 3}", f"t{n % 5}"][: n % 3] for n in range(start, start + count)],
        "place": pa.StructArray.from_arrays(
            [pa.array([f"city {n % 11}" for n in range(start, start + count)]),
             pa.DictionaryArray.from_arrays(pa.array(
                 [None if n % 4 == 3 else n % 4 for n in range(start, start + count)],
                 pa.int32()), countries)],
            ["city", "country"]),
        "count": pa.array([None if n % 5 == 0 else n * 1_000_003 for n in range(start,
                                                                           start + count)]),
        "at": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
                        + dt.timedelta(seconds=n) for n in range(start, start + count)],
                       pa.timestamp("us", tz="UTC")),
    })


def stitched(batches: list[pa.RecordBatch]) -> bytes:
    footer = PartsFooter()
    body = [MAGIC]
    for batch in batches:
        part = encode_part(batch, OPTIONS)
        footer.add(part)
        body.append(part.body.to_pybytes())
    return b"".join(body) + footer.finish()


def test_footers_read_and_written_back_byte_for_byte():
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_batches([records(0, 300)]), sink, row_group_size=100)
    data = sink.getvalue()
    length = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - length:-8]
    assert ThriftWriter().write_struct(ThriftReader(footer).read_struct()) == footer


@pytest.mark.parametrize("sizes", [[1], [1000, 1, 2500], [64, 64, 64, 64, 7]])
def test_parts_make_one_file_that_readers_read_whole(tmp_path, sizes):
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    batches = [records(start, size) for start, size in zip(starts, sizes, strict=True)]
    path = tmp_path / "stitched.parquet"
    path.write_bytes(stitched(batches))
    expected = pa.Table.from_batches([records(0, sum(sizes))]).to_pylist()

    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == len(sizes)
    assert parquet.metadata.num_rows == sum(sizes)
    assert parquet.read().to_pylist() == expected
    assert [parquet.read_row_group(i).num_rows for i in range(len(sizes))] == sizes

    duck = duckdb.connect()
    rows = duck.execute("SELECT id, note, tags, place.country, count FROM read_parquet(?) "
                        "ORDER BY id", [str(path)]).fetchall()
    assert rows == [(r["id"], r["note"], r["tags"], r["place"]["country"], r["count"])
                    for r in expected]


def test_a_cut_stream_is_not_a_parquet_file():
    data = stitched([records(0, 500), records(500, 500)])
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(io.BytesIO(data[: len(data) // 2]))
