"""What the bot must not forget on a restart: systemd tries per boot, paged answers' views.

systemd-cryptsetup allows three tries per boot (docs/initrd.md): a bot that forgot the
tries it spent would say nothing is asking instead of "it gave up". A paged answer's
buttons name a view by its token; a view kept in memory only would turn every button of
an answer given before the restart into "expired".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from store.database import Store, utcnow


def _query(text: str) -> str:
    """A query as stored: a digest of its message, never the text. The message comes from
    the machine, and a hostile initrd may echo an answer it was given into it."""
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


class SystemdTries:
    """Tries spent per (machine, boot id, query message); callers pass the message with
    the answers of the session masked (``UnlockSession.scrub``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def used(self, machine: str, boot: str, query: str) -> int:
        def read() -> int:
            rows = list(
                self.store.db.query(
                    "select tries from systemd_tries where machine = ? and boot_id = ? "
                    "and query = ?",
                    [machine, boot, _query(query)],
                )
            )
            return int(rows[0]["tries"]) if rows else 0

        return await self.store.call(read)

    async def used_this_boot(self, machine: str, boot: str) -> int:
        def read() -> int:
            row = next(
                iter(
                    self.store.db.query(
                        "select coalesce(sum(tries), 0) as n from systemd_tries "
                        "where machine = ? and boot_id = ?",
                        [machine, boot],
                    )
                )
            )
            return int(row["n"])

        return await self.store.call(read)

    async def spend(self, machine: str, boot: str, query: str) -> int:
        """Count one more try; the tries now spent on that query."""

        def write() -> int:
            self.store.db.execute(
                "insert into systemd_tries (machine, boot_id, query, tries, at) "
                "values (?, ?, ?, 1, ?) on conflict (machine, boot_id, query) "
                "do update set tries = tries + 1, at = excluded.at",
                [machine, boot, _query(query), utcnow()],
            )
            rows = self.store.db.query(
                "select tries from systemd_tries where machine = ? and boot_id = ? and query = ?",
                [machine, boot, _query(query)],
            )
            return int(next(iter(rows))["tries"])

        return await self.store.write(write)

    async def prune(self, before: str) -> int:
        """Forget tries counted before ``before`` (that boot is long over)."""

        def write() -> int:
            cursor = self.store.db.execute("delete from systemd_tries where at < ?", [before])
            return int(cursor.rowcount)

        return await self.store.call(write)


@dataclass(frozen=True)
class SavedView:
    token: str
    user_id: int
    chat_id: int
    message_id: int
    created: float
    pages: tuple[str, ...]


class PageViews:
    """Views of paged answers, by token; each kept only until it expires."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def save(self, view: SavedView, *, expired_before: float) -> None:
        """Keep ``view``, and forget every view created before ``expired_before``."""
        row = {
            "token": view.token,
            "user_id": view.user_id,
            "chat_id": view.chat_id,
            "message_id": view.message_id,
            "created": view.created,
            "pages": json.dumps(list(view.pages)),
        }

        def write() -> None:
            self.store.db.execute("delete from page_views where created < ?", [expired_before])
            self.store.db.table("page_views").insert(row, replace=True)

        await self.store.write(write)

    async def load(self, token: str) -> SavedView | None:
        def read() -> SavedView | None:
            rows = list(self.store.db.query("select * from page_views where token = ?", [token]))
            if not rows:
                return None
            row = rows[0]
            return SavedView(
                token=row["token"],
                user_id=row["user_id"],
                chat_id=row["chat_id"],
                message_id=row["message_id"],
                created=row["created"],
                pages=tuple(json.loads(row["pages"])),
            )

        return await self.store.call(read)

    async def forget(self, token: str) -> None:
        await self.store.write(
            lambda: self.store.db.execute("delete from page_views where token = ?", [token])
        )
