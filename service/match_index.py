"""The match keys of a snapshot (SPEC 3.6): one sorted lookup table per key, built by the
refresh and read by the server through memory maps.

Each table is the 64-bit DuckDB `hash` of a normalised key (sql/keys.sql) beside the position
of the record that has it (`cidx`, `idx`), sorted by hash, as `.npy` files in the snapshot
folder. A batch of inputs is then a binary search of each input's hash in these arrays
(numpy's searchsorted, microseconds per input), never a scan of the contacts: the server maps
the files and reads only the pages a search touches, so they cost neither start-up time nor
resident memory beyond those pages. Measured against DuckDB at 14M keys (README, Match): a
join of 100 hashed inputs against the sorted table scanned it whole (110-170 ms), whatever the
row group size; one point query per input cost 1-2 ms each.

Two records' keys share a hash with a chance of about 2^-64 per pair; at 10M contacts a batch
of 100 inputs meets such a false candidate with a chance below 10^-10, which the answer does
not guard against.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

# name -> the query (over the snapshot's tables, attached as `snap`) that gives its keys: the
# hash `h`, the record's position `pos` and, for a contact's name, its company's position.
LOOKUPS = {
    "contact_email": (
        "SELECT hash(k) AS h, cidx AS pos FROM ("
        " SELECT cidx, normalised_text(work_email) AS k FROM snap.contact"
        " UNION ALL"
        " SELECT cidx, normalised_text(unnest(personal_emails)) FROM snap.contact"
        ") WHERE k IS NOT NULL"),
    "contact_linkedin": (
        "SELECT hash(k) AS h, cidx AS pos FROM ("
        " SELECT cidx, normalised_linkedin(linkedin_url) AS k FROM snap.contact"
        " WHERE linkedin_url IS NOT NULL) WHERE k IS NOT NULL"),
    "contact_name": (
        "SELECT hash(first, last) AS h, cidx AS pos, company_idx AS company FROM ("
        " SELECT cidx, company_idx, normalised_text(first_name) AS first,"
        " normalised_text(last_name) AS last FROM snap.contact"
        " WHERE first_name IS NOT NULL AND last_name IS NOT NULL)"
        " WHERE first IS NOT NULL AND last IS NOT NULL"),
    "company_domain": "SELECT hash(domain_key) AS h, idx AS pos FROM snap.company "
                      "WHERE domain_key IS NOT NULL",
    "company_linkedin": (
        "SELECT hash(k) AS h, idx AS pos FROM ("
        " SELECT idx, normalised_linkedin(linkedin_url) AS k FROM snap.company"
        " WHERE linkedin_url IS NOT NULL) WHERE k IS NOT NULL"),
    "company_name": "SELECT hash(name_key) AS h, idx AS pos FROM snap.company "
                    "WHERE name_key IS NOT NULL",
}
# DuckDB's hash of this text, kept in the manifest: a server whose DuckDB hashes otherwise
# (another version) would find nothing, so it refuses to match on such a snapshot instead.
HASH_CHECK_TEXT = "quarry match keys"


def file_of(folder: Path, name: str, column: str) -> Path:
    return folder / f"match-{name}-{column}.npy"


def build_match_index(db: duckdb.DuckDBPyConnection, folder: Path) -> dict[str, int]:
    """At refresh: every lookup table sorted by hash into `folder`; returns the manifest's
    entry (the hash check and each table's size)."""
    sizes = {}
    for name, sql in LOOKUPS.items():
        # DuckDB sorts on every thread (numpy's argsort on one took a third longer).
        table = db.sql(f"SELECT * FROM ({sql}) ORDER BY h").to_arrow_table()
        for column in table.column_names:
            kind = np.uint64 if column == "h" else np.int32
            np.save(file_of(folder, name, column),
                    table.column(column).to_numpy().astype(kind, copy=False))
        sizes[name] = table.num_rows
        del table
    check = db.execute("SELECT hash(?)", [HASH_CHECK_TEXT]).fetchone()[0]
    return {"hash_check": int(check), "keys": sizes}


@dataclass
class Found:
    """What one key matched: the positions of the records (ascending, distinct) and, for a
    contact's name, each one's company."""

    positions: np.ndarray
    companies: np.ndarray | None = None


class MatchIndex:
    """The lookup tables of one snapshot, mapped on first use."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        self._lock = threading.Lock()

    def _tables(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        with self._lock:
            if name not in self._arrays:
                company = file_of(self.folder, name, "company")
                self._arrays[name] = (
                    _mapped(file_of(self.folder, name, "h")),
                    _mapped(file_of(self.folder, name, "pos")),
                    _mapped(company) if company.is_file() else None)
            return self._arrays[name]

    def find(self, name: str, hashes: list[int]) -> list[Found]:
        """Each hash's records in the lookup table `name`."""
        if not hashes:
            return []
        keys, positions, companies = self._tables(name)
        wanted = np.array(hashes, dtype=np.uint64)
        low = np.searchsorted(keys, wanted, side="left")
        high = np.searchsorted(keys, wanted, side="right")
        found = []
        for start, end in zip(low.tolist(), high.tolist(), strict=True):
            chosen = positions[start:end]
            if end - start > 1:
                # A record can have one key twice (a personal email that is its work email).
                chosen, first = np.unique(chosen, return_index=True)
            else:
                first = slice(None)
            found.append(Found(chosen, None if companies is None
                               else companies[start:end][first]))
        return found


def _mapped(path: Path) -> np.ndarray:
    """The array in `path`, memory-mapped, as a plain ndarray: numpy's memmap subclass costs
    microseconds on every slice, which a batch takes hundreds of."""
    return np.asarray(np.load(path, mmap_mode="r"))


_INDEXES: dict[int, MatchIndex] = {}
_INDEXES_LOCK = threading.Lock()


def match_index(snapshot) -> MatchIndex:
    """The snapshot's MatchIndex, made once and let go of with the snapshot (its maps then
    close, and a pruned snapshot's files are freed)."""
    key = id(snapshot)
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is None:
            index = _INDEXES[key] = MatchIndex(snapshot.path)
            weakref.finalize(snapshot, _INDEXES.pop, key, None)
        return index
