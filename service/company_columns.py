"""The companies of a snapshot held in memory for exports, gathered by position.

A contacts export joins each contact to its company. DuckDB would rebuild a hash table of
every company for each window of contacts; gathering by position (a contact's company_idx)
from columns in memory is several times cheaper. Gathering is bound by memory access on this
kind of machine, so the layout keeps it to few, narrow reads (README, Export):

* the few-valued columns (tld, industry, function, city, state, country) are codes into a
  vocabulary, side by side in one integer matrix: a contact's six codes are one read; the
  codes are also what Arrow and Parquet exports send (dictionary arrays of the vocabulary);
* technologies are codes too, the lists' items one after another with their offsets;
* the unique text columns (id, name, domain, linkedin_url), the generic emails (lists of
  unique text) and the numbers stay Arrow arrays.

A million companies take about 120 MB. `take` gives a window's companies as columns (Arrow,
Parquet, CSV); `json` as the records' JSON text (NDJSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .json_text import escaping_of, iso_text, json_string, json_strings

FEW_VALUES = ("tld", "industry", "function", "city", "state", "country")
TEXT = ("id", "name", "domain", "linkedin_url")
LISTS = ("generic_emails",)
NUMBERS = ("employee_count", "created_at")
MISSING = -1  # the code of a null


@dataclass(frozen=True)
class CompanyColumns:
    text: dict[str, pa.Array]     # TEXT and LISTS
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
        text: dict[str, list[pa.Array]] = {name: [] for name in (*TEXT, *LISTS)}
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
            for name in (*TEXT, *LISTS):
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

    def json(self, positions: pa.Array) -> pa.Array:
        """The records of the companies at `positions` as JSON text, byte for byte those of
        the records store (json_text), with the fields in the order of SPEC 3.4: the columns
        of `take`, each value rendered as JSON."""
        columns = self.take(positions, plain=False)
        text = {name: json_strings(columns[name], self.escaping[name]) for name in TEXT}
        emails = columns["generic_emails"]
        emails = pa.ListArray.from_arrays(emails.offsets, json_strings(
            emails.values, self.escaping["generic_emails"]))
        few = {name: self._json_of(columns[name], name) for name in FEW_VALUES}
        technologies = columns["technologies"]
        items = pa.ListArray.from_arrays(technologies.offsets,
                                         self._json_of(technologies.values, "technologies"))
        return pc.binary_join_element_wise(
            '{"id":', text["id"], ',"name":', text["name"], ',"domain":', text["domain"],
            ',"tld":', few["tld"], ',"industry":', few["industry"],
            ',"function":', few["function"], ',"location":{"city":', few["city"],
            ',"state":', few["state"], ',"country":', few["country"],
            '},"technologies":[', pc.binary_join(items, ","),
            '],"employee_count":',
            pc.fill_null(pc.cast(columns["employee_count"], pa.string()), "null"),
            ',"linkedin_url":', text["linkedin_url"],
            ',"generic_emails":[', pc.binary_join(emails, ","),
            '],"created_at":"', iso_text(columns["created_at"]), '"}', "")

    # The JSON forms are made on the first NDJSON export, not when the companies are loaded:
    # finding what each text column must escape reads all of it (0.3 s at 1M companies).
    @cached_property
    def escaping(self) -> dict[str, str]:
        """What JSON must escape in each TEXT column (json_text.escaping_of)."""
        return {name: escaping_of(values.flatten() if name in LISTS else values)
                for name, values in self.text.items()}

    @cached_property
    def vocabulary_json(self) -> dict[str, pa.Array]:
        """Each vocabulary entry as JSON text."""
        return {name: pa.array([json_string(value) for value in values.to_pylist()],
                               pa.string())
                for name, values in self.vocabulary.items()}

    def _json_of(self, coded: pa.DictionaryArray, name: str) -> pa.Array:
        return pc.fill_null(self.vocabulary_json[name].take(coded.indices), "null")

    def _technologies(self, chosen: np.ndarray, plain: bool) -> pa.ListArray:
        starts = self.technology_offsets[chosen]
        lengths = self.technology_offsets[chosen + 1] - starts
        offsets = np.zeros(len(chosen) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        # item k of the result is item k - offsets[i] + starts[i] of all items, i its list
        items = np.arange(int(offsets[-1]), dtype=np.int64) + np.repeat(
            starts - offsets[:-1], lengths)
        codes = np.take(self.technology_codes, items)
        return pa.ListArray.from_arrays(
            pa.array(offsets), self._decode(codes, self.vocabulary["technologies"], plain))

    @staticmethod
    def _decode(codes: np.ndarray, vocabulary: pa.Array, plain: bool) -> pa.Array:
        # A null slot holds index 0, not MISSING: Arrow leaves a null's index undefined, but
        # readers such as polars check every index against the dictionary.
        missing = codes == MISSING
        indices = pa.array(np.where(missing, 0, codes), mask=missing)
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
