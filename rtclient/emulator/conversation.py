"""The default conversation: an ordered list of items and the API's rules on them.

Items are stored as the API shows them (``id``, ``object: realtime.item``, ``type``,
``status`` ...). Refusals raise :class:`ClientEventError` with the API's codes; the
session turns them into ``error`` events. Lives on the emulator's loop.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ClientEventError
from .ids import IdFactory

ROOT = "root"


class Conversation:
    def __init__(self, conversation_id: str, ids: IdFactory) -> None:
        self.id = conversation_id
        self._ids = ids
        self._items: list[dict[str, Any]] = []
        self._audio_ms: dict[str, int] = {}
        self._truncated: set[str] = set()

    def __len__(self) -> int:
        return len(self._items)

    def snapshot(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._items)

    def get(self, item_id: str) -> dict[str, Any] | None:
        for item in self._items:
            if item.get("id") == item_id:
                return item
        return None

    def last_id(self) -> str | None:
        return self._items[-1]["id"] if self._items else None

    def previous_id(self, item_id: str) -> str | None:
        for index, item in enumerate(self._items):
            if item.get("id") == item_id:
                return self._items[index - 1]["id"] if index > 0 else None
        return None

    def has_call(self, call_id: str) -> bool:
        return any(
            it.get("type") == "function_call" and it.get("call_id") == call_id for it in self._items
        )

    def normalize_client_item(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A client-created item as the server stores it (id, object, status)."""
        item = copy.deepcopy(raw)
        item_id = item.get("id") or self._ids.new("item")
        if self.get(item_id) is not None:
            raise ClientEventError(
                "item_create_duplicate_item_id",
                f"Error adding item: an item with id '{item_id}' already exists.",
                param="item.id",
            )
        item["id"] = item_id
        item["object"] = "realtime.item"
        item["status"] = "completed"
        kind = item.get("type")
        if kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not self.has_call(call_id):
                raise ClientEventError(
                    "invalid_tool_call_id",
                    f"Tool call ID '{call_id}' not found in conversation.",
                    param="item.call_id",
                )
        elif kind == "function_call":
            item.setdefault("call_id", self._ids.new("call", 16))
        elif kind == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "input_audio":
                    part.setdefault("transcript", None)
        return item

    def insert(self, item: dict[str, Any], previous_item_id: str | None = None) -> str | None:
        """Add ``item`` after ``previous_item_id`` (``"root"`` = first, None = last).

        Returns the id of the item now before it (what ``*.added`` events report).
        """
        if previous_item_id is None:
            before = self.last_id()
            self._items.append(item)
            return before
        if previous_item_id == ROOT:
            self._items.insert(0, item)
            return None
        for index, existing in enumerate(self._items):
            if existing.get("id") == previous_item_id:
                self._items.insert(index + 1, item)
                return previous_item_id
        raise ClientEventError(
            "item_create_invalid_previous_item_id",
            f"Error adding item: the previous item with id '{previous_item_id}' does not exist.",
            param="previous_item_id",
        )

    def existing(self, item_id: str, action: str, verb: str) -> dict[str, Any]:
        """The item, or the API's ``item_<action>_invalid_item_id`` error."""
        item = self.get(item_id)
        if item is None:
            raise ClientEventError(
                f"item_{action}_invalid_item_id",
                f"Error {verb} item: the item with id '{item_id}' does not exist.",
                param="item_id",
            )
        return item

    def delete(self, item_id: str) -> None:
        item = self.existing(item_id, "delete", "deleting")
        self._items.remove(item)
        self._audio_ms.pop(item_id, None)
        self._truncated.discard(item_id)

    def retrieve(self, item_id: str) -> dict[str, Any]:
        return self.existing(item_id, "retrieve", "retrieving")

    def is_truncated(self, item_id: str) -> bool:
        """The user heard only part of this item (its unheard transcript is gone)."""
        return item_id in self._truncated

    def record_audio(self, item_id: str, milliseconds: int) -> None:
        """How much speech an assistant audio item holds (for truncate's bounds)."""
        self._audio_ms[item_id] = self._audio_ms.get(item_id, 0) + milliseconds

    def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> None:
        """Cut an assistant message's audio (and drop its unheard transcript)."""
        item = self.existing(item_id, "truncate", "truncating")
        if item.get("type") != "message" or item.get("role") != "assistant":
            raise ClientEventError(
                "item_truncate_invalid_item_id",
                f"Error truncating item: only assistant messages can be truncated, "
                f"'{item_id}' is not one.",
                param="item_id",
            )
        content = item.get("content") or []
        if (
            not 0 <= content_index < len(content)
            or content[content_index].get("type") != "output_audio"
        ):
            raise ClientEventError(
                "invalid_value",
                f"Error truncating item: content index {content_index} of '{item_id}' "
                "is not an audio content part.",
                param="content_index",
            )
        available = self._audio_ms.get(item_id, 0)
        if audio_end_ms < 0 or audio_end_ms > available:
            raise ClientEventError(
                "invalid_value",
                f"Audio content of {available}ms is already shorter than {audio_end_ms}ms",
                param="audio_end_ms",
            )
        self._audio_ms[item_id] = audio_end_ms
        self._truncated.add(item_id)
        content[content_index]["transcript"] = ""
