"""The companies of a snapshot held in memory for exports, gathered by position.

A contacts export joins each contact to its company. DuckDB would rebuild a hash table of
every company for each window of contacts; gathering by position (a contact's company_idx)
from columns in memory is several times cheaper. Gathering is bound by memory access on this
kind of machine, so the layout keeps it to few, narrow reads (README, Export):

* the few-valued columns (tld, industry, function, city, state, country) are codes into a
  vocabulary, side by side in one integer matrix: a contact's six codes are one read; the
  codes are also what Arrow and Parquet exports send (dictionary arrays of the vocabulary);
* technologies are codes too, the lists' items one after another with their offsets;
* the unique text columns (id, name, domain) and the numbers stay Arrow arrays.

A million companies take about 120 MB.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FEW_VALUES = ("tld", "industry", "function", "city", "state", "country")
TEXT = ("id", "name", "domain")
NUMBERS = ("employee_count", "created_at")
MISSING = -1  # the code of a null


@dataclass(frozen=True)
class CompanyColumns:
    text: dict[str, pa.Array]
    numbers: dict[str, pa.Array]
    codes: np.ndarray                  # one row per company, one column per FEW_VALUES (code_type)
    vocabulary: dict[str, pa.Array]    # FEW_VALUES and "technologies"
    technology_offsets: np.ndarray     # company i's technologies: codes[offsets[i]:offsets[i+1]]
    technology_codes: np.ndarray

    @classmethod
    def load(cls, cursor: duckdb.DuckDBPyConnection, columns_sql: str,
             batch_rows: int) -> CompanyColumns:
        """Read `columns_sql` (the company record's columns) in idx order. Vocabularies are
        read first and rows come in batches, each coded as it arrives, so the text of every
        company is never in memory at once."""
        vocabulary = {name: _distinct(cursor, f'SELECT DISTINCT "{name}" FROM company')
                      for name in FEW_VALUES}
        vocabulary["technologies"] = _distinct(
            cursor, "SELECT DISTINCT unnest(technologies) FROM company")
        few_type = code_type(*(vocabulary[name] for name in FEW_VALUES))
        technology_type = code_type(vocabulary["technologies"])
        text: dict[str, list[pa.Array]] = {name: [] for name in TEXT}
        numbers: dict[str, list[pa.Array]] = {name: [] for name in NUMBERS}
        codes: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        technology_codes: list[np.ndarray] = []
        loaded = 0
        reader = cursor.sql(f"SELECT company.idx, {columns_sql} FROM company").to_arrow_reader(
            batch_rows)
        for batch in reader:
            # The table is stored in idx order and a plain scan keeps it (DuckDB's order
            # preservation); row i must be the company of idx i.
            expected = pa.array(np.arange(loaded, loaded + batch.num_rows, dtype=np.int32))
            if not batch.column("idx").equals(expected):
                raise RuntimeError("the company table is not in idx order")
            loaded += batch.num_rows
            for name in TEXT:
                text[name].append(batch.column(name))
            for name in NUMBERS:
                numbers[name].append(batch.column(name))
            codes.append(np.stack([_codes(batch.column(name), vocabulary[name], few_type)
                                   for name in FEW_VALUES], axis=1))
            technologies = batch.column("technologies")
            lengths.append(pc.list_value_length(technologies).fill_null(0).to_numpy())
            technology_codes.append(_codes(technologies.flatten(), vocabulary["technologies"],
                                           technology_type))
        offsets = np.zeros(loaded + 1, dtype=np.int64)
        np.cumsum(np.concatenate(lengths) if lengths else [], out=offsets[1:])
        return cls(
            text={name: _concat(parts, reader.schema.field(name).type)
                  for name, parts in text.items()},
            numbers={name: _concat(parts, reader.schema.field(name).type)
                     for name, parts in numbers.items()},
            codes=np.concatenate(codes) if codes else np.zeros((0, len(FEW_VALUES)), few_type),
            vocabulary=vocabulary,
            technology_offsets=offsets,
            technology_codes=(np.concatenate(technology_codes) if technology_codes
                              else np.zeros(0, technology_type)))

    def take(self, positions: pa.Array, plain: bool) -> dict[str, pa.Array]:
        """The record columns of the companies at `positions`: text, or (plain=False)
        dictionary arrays for the coded columns, which Arrow and Parquet exports send as they
        are."""
        chosen = positions.to_numpy(zero_copy_only=False)
        columns = {name: values.take(positions) for name, values in self.text.items()}
        coded = np.take(self.codes, chosen, axis=0)
        for index, name in enumerate(FEW_VALUES):
            columns[name] = self._decode(coded[:, index], self.vocabulary[name], plain)
        columns["technologies"] = self._technologies(chosen, plain)
        columns.update({name: values.take(positions) for name, values in self.numbers.items()})
        return columns

    def _technologies(self, chosen: np.ndarray, plain: bool) -> pa.ListArray:
        starts = self.technology_offsets[chosen]
        lengths = self.technology_offsets[chosen + 1] - starts
        offsets = np.zeros(len(chosen) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        # item k of the result is item k - offsets[i] + starts[i] of all items, i its list
        items = np.arange(int(offsets[-1]), dtype=np.int64) + np.repeat(
            starts - offsets[:-1], lengths)
        codes = np.take(self.technology_codes, items)
        values = self._decode(codes, self.vocabulary["technologies"], plain)
        return pa.ListArray.from_arrays(pa.array(offsets), values)

    @staticmethod
    def _decode(codes: np.ndarray, vocabulary: pa.Array, plain: bool) -> pa.Array:
        indices = pa.array(codes, mask=codes == MISSING)
        if plain:
            return vocabulary.take(indices)
        return pa.DictionaryArray.from_arrays(indices, vocabulary)


def _distinct(cursor: duckdb.DuckDBPyConnection, sql: str) -> pa.Array:
    return cursor.sql(sql).to_arrow_table().column(0).combine_chunks().drop_null()


def code_type(*vocabularies: pa.Array) -> np.dtype:
    """The narrowest integer type for codes into these vocabularies: int16 up to 32,767
    values, the case of every vocabulary in the generated data. The codes become the indices
    of the Arrow and Parquet dictionaries, so narrower codes are fewer bytes sent."""
    largest = max(len(vocabulary) for vocabulary in vocabularies)
    return np.dtype(np.int16 if largest < np.iinfo(np.int16).max else np.int32)


def _codes(values: pa.Array, vocabulary: pa.Array, kind: np.dtype) -> np.ndarray:
    return pc.index_in(values, value_set=vocabulary).fill_null(MISSING).to_numpy().astype(kind)


def _concat(parts: list[pa.Array], kind: pa.DataType) -> pa.Array:
    return pa.concat_arrays(parts) if parts else pa.array([], kind)
