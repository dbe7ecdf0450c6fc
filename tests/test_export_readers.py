"""Every export format, read by the readers clients use: pyarrow, pandas, polars and DuckDB.

Each reader must give back the records of the search, in id order: the ids, and the nested
company's industry (a dictionary column in Arrow, null in some records), compared with the
search API's records."""

from __future__ import annotations

import io
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc as ipc
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest

from tests.test_export import all_pages

FILTERS = {"contacts": {"seniorities": ["vp", "Manager", "director"]},
           "companies": {"exclude_industries": ["retail"]}}
SUFFIX = {"ndjson": "ndjson", "csv": "csv", "parquet": "parquet", "arrow": "arrows"}


def _industry(kind: str, record: dict):
    return (record["company"] if kind == "contacts" else record)["industry"]


# Per format: reader name -> function(path) giving (ids, industries) in the file's order.
def _column_names(kind: str, flat: bool) -> tuple[str, str]:
    if flat:  # CSV: nested values flattened by path
        return "id", "company_industry" if kind == "contacts" else "industry"
    return "id", "industry"


def _nested(kind: str, frame_rows: list[dict]) -> tuple[list, list]:
    return ([row["id"] for row in frame_rows],
            [_industry(kind, row) for row in frame_rows])


def read_pyarrow(fmt: str, kind: str, path: Path) -> tuple[list, list]:
    if fmt == "csv":
        table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(
            strings_can_be_null=True))
        return (table.column("id").to_pylist(),
                table.column(_column_names(kind, True)[1]).to_pylist())
    if fmt == "ndjson":
        table = pa_json.read_json(path)
    elif fmt == "parquet":
        table = pq.read_table(path)
    else:
        with ipc.open_stream(path.read_bytes()) as reader:
            table = reader.read_all()
    return _nested(kind, table.to_pylist())


def read_pandas(fmt: str, kind: str, path: Path) -> tuple[list, list]:
    if fmt == "csv":
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        industries = [value or None for value in frame[_column_names(kind, True)[1]]]
        return list(frame["id"]), industries
    if fmt == "ndjson":
        frame = pd.read_json(path, lines=True, dtype=False)
    elif fmt == "parquet":
        frame = pd.read_parquet(path)
    else:
        with ipc.open_stream(path.read_bytes()) as reader:
            frame = reader.read_pandas()
    return _nested(kind, [{key: None if _isna(value) else value for key, value in row.items()}
                          for row in frame.to_dict("records")])


def _isna(value) -> bool:
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))


def read_polars(fmt: str, kind: str, path: Path) -> tuple[list, list]:
    if fmt == "csv":
        frame = pl.read_csv(path, infer_schema=False)
        return frame["id"].to_list(), frame[_column_names(kind, True)[1]].to_list()
    if fmt == "ndjson":
        frame = pl.read_ndjson(path)
    elif fmt == "parquet":
        frame = pl.read_parquet(path)
    else:
        frame = pl.read_ipc_stream(path)
    return _nested(kind, frame.to_dicts())


def read_duckdb(fmt: str, kind: str, path: Path) -> tuple[list, list]:
    column = ("company.industry" if kind == "contacts" else "industry")
    db = duckdb.connect()
    try:
        if fmt == "csv":
            relation = db.read_csv(str(path), all_varchar=True)
            column = _column_names(kind, True)[1]
        elif fmt == "ndjson":
            relation = db.read_json(str(path), format="newline_delimited")
        elif fmt == "parquet":
            relation = db.read_parquet(str(path))
        else:  # DuckDB reads an Arrow stream through pyarrow's reader
            relation = db.from_arrow(ipc.open_stream(path.read_bytes()))
        rows = relation.select(f"id, {column} AS industry").fetchall()
    finally:
        db.close()
    return [row[0] for row in rows], [row[1] for row in rows]


READERS = {"pyarrow": read_pyarrow, "pandas": read_pandas, "polars": read_polars,
           "duckdb": read_duckdb}


@pytest.fixture(scope="module")
def exports(client, tmp_path_factory):
    """Each (kind, format) exported once to a file, with the search's records."""
    folder = tmp_path_factory.mktemp("exports")
    files, expected = {}, {}
    for kind in ("contacts", "companies"):
        expected[kind] = all_pages(client, f"/v1/{kind}/search", FILTERS[kind])
        for fmt in SUFFIX:
            answer = client.post(f"/v1/{kind}/export", json={**FILTERS[kind], "format": fmt})
            assert answer.status_code == 200, answer.text
            path = folder / f"{kind}.{SUFFIX[fmt]}"
            path.write_bytes(answer.content)
            files[kind, fmt] = path
    return files, expected


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("fmt", SUFFIX)
@pytest.mark.parametrize("kind", ["contacts", "companies"])
def test_every_reader_reads_every_export(exports, kind, fmt, reader):
    files, expected = exports
    ids, industries = READERS[reader](fmt, kind, files[kind, fmt])
    assert ids == [record["id"] for record in expected[kind]]
    assert industries == [_industry(kind, record) for record in expected[kind]]
    # the fixture has companies without an industry: the null slots are read as nulls
    assert None in industries


def test_arrow_null_slots_hold_a_valid_dictionary_index(exports):
    """Arrow's format leaves a null slot's index undefined, but polars (and other readers)
    check every index against its dictionary: a null slot must hold a valid one."""
    files, _ = exports
    table = ipc.open_stream(files["contacts", "arrow"].read_bytes()).read_all()
    checked = 0
    for batch in table.to_batches():
        company = batch.column("company")
        for child in company.type:
            column = company.field(child.name)
            if pa.types.is_dictionary(column.type):
                # the raw slots, nulls included (to_numpy would turn nulls into NaN)
                codes = column.indices
                raw = np.frombuffer(codes.buffers()[1], dtype=codes.type.to_pandas_dtype())
                indices = raw[codes.offset:codes.offset + len(codes)]
                assert (indices >= 0).all() and (indices < len(column.dictionary)).all()
                checked += 1
    assert checked


def test_an_arrow_export_is_read_by_polars_from_a_stream(exports):
    files, _ = exports
    frame = pl.read_ipc_stream(io.BytesIO(files["contacts", "arrow"].read_bytes()))
    assert frame.height > 100
