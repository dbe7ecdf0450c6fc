"""How many exports may run at once: per key, per user (over all of their keys) and on the whole
server. An export holds a few encoded windows in memory while its client reads (tens of MB),
so open exports, read or not, must stay bounded whatever the number of keys or users.

A slot is taken before the export's first await (so that concurrent requests cannot all pass
the check) and given back exactly once, by `ExportSlot.release`, however the export ends.
"""

from __future__ import annotations

from collections.abc import Callable

from .envelope import ApiError

MAX_EXPORTS_PER_KEY = 2
RETRY_AFTER = "5"  # seconds; an export runs for seconds to minutes


class ExportSlots:
    def __init__(self, per_user: int, total: int, per_key: int = MAX_EXPORTS_PER_KEY):
        self.per_key, self.per_user, self.total = per_key, per_user, total
        self.by_key: dict[int, int] = {}
        self.by_user: dict[int, int] = {}
        self.running = 0

    def take(self, user_id: int, key_id: int) -> ExportSlot:
        """One export slot of this key and user, or 429 `rate_limited` (ApiError)."""
        if self.by_key.get(key_id, 0) >= self.per_key:
            raise _refused(f"this key already runs {self.per_key} exports; wait for one to "
                           "finish")
        if self.by_user.get(user_id, 0) >= self.per_user:
            raise _refused(f"this account already runs {self.per_user} exports (over all of "
                           "its keys); wait for one to finish")
        if self.running >= self.total:
            raise _refused(f"the server already runs {self.total} exports, the most it runs at "
                           f"once; retry in {RETRY_AFTER} s")
        self.by_key[key_id] = self.by_key.get(key_id, 0) + 1
        self.by_user[user_id] = self.by_user.get(user_id, 0) + 1
        self.running += 1
        return ExportSlot(self, user_id, key_id)

    def _give_back(self, user_id: int, key_id: int) -> None:
        for counts, owner in ((self.by_key, key_id), (self.by_user, user_id)):
            if counts[owner] > 1:
                counts[owner] -= 1
            else:
                del counts[owner]  # no entry per key ever used stays behind
        self.running -= 1


class ExportSlot:
    __slots__ = ("slots", "user_id", "key_id", "released", "on_release")

    def __init__(self, slots: ExportSlots, user_id: int, key_id: int):
        self.slots, self.user_id, self.key_id = slots, user_id, key_id
        self.released = False
        self.on_release: Callable[[], object] | None = None  # e.g. the exports-running gauge

    def release(self) -> None:
        """Give the slot back; later calls do nothing."""
        if not self.released:
            self.released = True
            self.slots._give_back(self.user_id, self.key_id)
            if self.on_release is not None:
                self.on_release()


def _refused(details: str) -> ApiError:
    return ApiError.one("rate_limited", details, headers={"Retry-After": RETRY_AFTER})
