"""An API key that cannot leak through a repr, a log line or an exception message.

A key is checked where it is given, not where it is first sent: every key the API
issues (``sk-...``, ``sk-proj-...``, ``ek_...``) is one token of visible ASCII
characters. Whitespace around it is never part of it and is removed without a word: a
key read from a file (``Path(".key").read_text()``) or from a ``.env`` written on
Windows ends with ``\\n`` or ``\\r\\n``, and refusing that would only make every caller
write ``.strip()`` - there is nothing to guess. Anything else that no key holds - a
control character, a space or a non-ASCII character *inside* it (two lines of a file, a
binary file, a typographic dash pasted from a document) - is refused with
:class:`~rtclient.errors.InvalidAPIKeyError`, naming the character and where it is
but not the key: guessing which part was meant would send the wrong credential, and
HTTP itself refuses such a header (aiohttp raised a bare ``ValueError`` at connect).

Two kinds, one interface (:meth:`Secret.fetch`, :meth:`Secret.redact`):

* :class:`Secret` - a key string: a standard key (``sk-...``, an Azure resource key) or
  an ephemeral client secret (``ek_...``).
* :class:`TokenProvider` - a callable that returns a bearer token, such as an Azure
  OpenAI ``azure_ad_token_provider`` (Microsoft Entra ID). It is called for every
  connection and every HTTP request (the offer, a hang-up), never at construction and
  never cached, because such tokens expire within the hour; it is called off the event
  loop (a provider may block: ``azure-identity`` refreshes tokens over HTTP). Each token
  is checked as a key is.
"""

from __future__ import annotations

import asyncio
import unicodedata
from collections import deque
from collections.abc import Callable

from rtclient.errors import AuthenticationError, InvalidAPIKeyError

_TOKENS_REMEMBERED = 16  # the tokens a provider handed out, kept only to redact them


class Secret:
    """Holds a key; every textual form is redacted. Only ``fetch()``/``reveal()`` give it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = _checked(value)

    def reveal(self) -> str:
        return self._value

    async def fetch(self) -> str:
        """The credential for one request (a provider's fresh token; a key as it is)."""
        return self._value

    def as_api_key(self) -> str | Callable[[], str]:
        """What was given as ``api_key``: the key, or the token provider."""
        return self._value

    @property
    def is_ephemeral(self) -> bool:
        """Ephemeral client secrets (``ek_...``) use the plain SDP form of signaling."""
        return self._value.startswith("ek_")

    @property
    def is_bearer_token(self) -> bool:
        """A token for ``Authorization: Bearer`` everywhere (a provider's, or an
        ephemeral key), as opposed to a resource key, which Azure takes as ``api-key``."""
        return self.is_ephemeral

    def redact(self, text: str) -> str:
        """Remove the key from ``text`` (e.g. a third-party error message)."""
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")

    def __bool__(self) -> bool:
        return bool(self._value)


class TokenProvider(Secret):
    """A bearer token from ``provider()``, fetched for each request (see the module)."""

    __slots__ = ("_handed_out", "_provider")

    def __init__(self, provider: Callable[[], str]) -> None:
        super().__init__("")
        self._provider = provider
        self._handed_out: deque[str] = deque(maxlen=_TOKENS_REMEMBERED)

    def reveal(self) -> str:
        """A fresh token, on this thread (:meth:`fetch` keeps a blocking provider off
        the event loop)."""
        try:
            token = self._provider()
        except Exception as exc:
            raise AuthenticationError(
                f"the api_key token provider raised {type(exc).__name__}",
                code="token_provider_failed",
            ) from exc
        if not isinstance(token, str) or not token.strip():
            raise AuthenticationError(
                "the api_key token provider returned no token (expected a non-empty str, "
                f"got {type(token).__name__})",
                code="token_provider_failed",
            )
        token = _checked(str.__str__(token))  # a str subclass's own methods are not trusted
        self._handed_out.append(token)
        return token

    async def fetch(self) -> str:
        return await asyncio.to_thread(self.reveal)

    def as_api_key(self) -> Callable[[], str]:
        return self._provider

    @property
    def is_ephemeral(self) -> bool:
        return False

    @property
    def is_bearer_token(self) -> bool:
        return True

    def redact(self, text: str) -> str:
        for token in list(self._handed_out):
            text = text.replace(token, "***")
        return text

    def __repr__(self) -> str:
        return "TokenProvider('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return True


def credential(api_key: str | Callable[[], str]) -> Secret:
    """``api_key`` as a credential: a string is a key, a callable a token provider."""
    if callable(api_key):
        return TokenProvider(api_key)
    return Secret(api_key)


def _checked(value: str) -> str:
    """``value`` without surrounding whitespace, or :class:`InvalidAPIKeyError`."""
    if not isinstance(value, str):
        raise InvalidAPIKeyError(f"the API key must be a str, not {type(value).__name__}")
    key = value.strip()
    for position, char in enumerate(key):
        if not ("!" <= char <= "~"):  # visible ASCII, 0x21-0x7E
            raise InvalidAPIKeyError(
                f"the API key ({_shape(key)}) holds {_name(char)} at position {position}, "
                "which no API key does: was more than the key read (two lines of a "
                "file?), or a character changed when it was copied?"
            )
    return key


def _shape(key: str) -> str:
    """What a message may say about a key: its kind and length, no character of it."""
    kind = "an ephemeral key" if key.startswith("ek_") else "a key"
    return f"{kind} of {len(key)} characters"


def _name(char: str) -> str:
    """``U+000A LINE FEED``: a character named, never shown (it may be unprintable)."""
    name = unicodedata.name(char, "") or {"\n": "LINE FEED", "\r": "CARRIAGE RETURN"}.get(
        char, "a control character"
    )
    return f"U+{ord(char):04X} {name}"
