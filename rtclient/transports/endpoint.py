"""Where the Realtime API lives under a ``base_url``, and how a request proves who it is.

Three shapes, told apart by the path (never the host, so a proxy or the emulator on
loopback can stand in for any of them):

==================  ==========================================  ============================
shape               ``base_url``                                routes
==================  ==========================================  ============================
OpenAI              ``https://api.openai.com/v1`` (anything     ``{base_url}/realtime/calls``
                    that speaks its API, the emulator too)      (WebRTC),
                                                                ``{ws base_url}/realtime?
                                                                model=`` (WebSocket)
Azure OpenAI v1     ``https://<resource>.openai.azure.com/      the same routes; the model
                    openai/v1``                                 is the deployment's name
Azure OpenAI,       ``https://<resource>.openai.azure.com/      WebSocket only: ``wss://
dated API version   openai/deployments/<deployment>`` or        <resource>.../openai/
                    ``.../openai``, with ``?api-version=`` or   realtime?api-version=...&
                    ``OPENAI_API_VERSION``                      deployment=...``
==================  ==========================================  ============================

The dated shape is the ``openai`` package's ``AzureOpenAI`` client's (``azure_endpoint``
plus ``api_version``; its ``realtime.connect`` asks ``/openai/realtime`` with the
deployment in the query). Calls - WebRTC, and sidebands on them - are the v1 route's
only: the older preview WebRTC lived on a separate regional host with its own ephemeral
keys, and was replaced by ``/openai/v1/realtime/calls``.

Authentication: OpenAI takes ``Authorization: Bearer <key>``. Azure takes a resource key
as ``api-key: <key>``, and a Microsoft Entra ID token (from a token provider) or an
ephemeral ``ek_`` key as ``Authorization: Bearer``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from rtclient._secret import Secret

Shape = Literal["openai", "azure", "azure-dated"]
_DATED = re.compile(r"^(?P<root>.*/openai)(?:/deployments/(?P<deployment>[^/]+))?$")
_V1 = re.compile(r"/openai/v1/?$")


@dataclass(frozen=True)
class Endpoint:
    """One ``base_url``, understood (see the module docstring)."""

    base_url: str
    """Scheme, host and path, without the query or a trailing slash."""
    shape: Shape
    query: dict[str, str] = field(default_factory=dict)
    """Parameters every request carries: the ``base_url``'s query (``api-version``)."""
    deployment: str | None = None
    """The deployment a dated Azure ``base_url`` names in its path."""

    @classmethod
    def parse(cls, base_url: str) -> Endpoint:
        """Raises ``ValueError`` for a deployment path with no API version.

        ``.../openai/v1`` is Azure's v1 endpoint; ``.../openai/deployments/<name>`` a dated
        one; a bare ``.../openai`` is dated only with an API version (``?api-version=`` or
        ``OPENAI_API_VERSION``) - without one it is taken as an OpenAI-shaped gateway."""
        parts = urlsplit(base_url.strip())
        path = parts.path.rstrip("/")
        query = dict(parse_qsl(parts.query))
        plain = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        if _V1.search(path):
            return cls(plain, "azure", query)
        dated = _DATED.match(path)
        version = query.get("api-version") or os.environ.get("OPENAI_API_VERSION")
        if dated is None or (dated["deployment"] is None and not version):
            return cls(plain, "openai", query)
        if not version:
            raise ValueError(
                f"the Azure OpenAI base_url {plain!r} names a deployment, the dated API's "
                "shape: add ?api-version=... to it (or set OPENAI_API_VERSION), or use the "
                "v1 endpoint, https://<resource>.openai.azure.com/openai/v1"
            )
        root = urlunsplit((parts.scheme, parts.netloc, dated["root"], "", ""))
        return cls(root, "azure-dated", {**query, "api-version": version}, dated["deployment"])

    @property
    def azure(self) -> bool:
        return self.shape != "openai"

    def check_call(self, what: str) -> None:
        """Refuse ``what`` (WebRTC, a sideband) where the endpoint has no calls
        (``ValueError``)."""
        if self.shape == "azure-dated":
            raise ValueError(self._v1_only(what))

    def _v1_only(self, what: str) -> str:
        return (
            f"{what} on Azure OpenAI is the v1 endpoint's: use base_url="
            "'https://<resource>.openai.azure.com/openai/v1' with the deployment as the "
            f"model (this base_url, {self.base_url!r}, has a dated API version: an own "
            "WebSocket session, transport='websocket', works with it)"
        )

    def calls_url(self) -> str:
        """``POST`` an SDP offer here (WebRTC)."""
        self.check_call("WebRTC")
        return f"{self.base_url}/realtime/calls"

    def hangup_url(self, call_id: str) -> str:
        return f"{self.calls_url()}/{call_id}/hangup"

    def websocket(self, *, model: str, call_id: str | None) -> tuple[str, dict[str, str]]:
        """The WebSocket URL and its query: a session of ``model`` (the deployment on
        Azure), or a sideband on ``call_id``."""
        url = _ws(f"{self.base_url}/realtime")
        if self.shape == "azure-dated":
            if call_id is not None:
                raise ValueError(self._v1_only("a sideband"))
            return url, {**self.query, "deployment": self.deployment or model}
        where = {"call_id": call_id} if call_id is not None else {"model": model}
        return url, {**self.query, **where}

    async def headers(self, key: Secret) -> dict[str, str]:
        """The authentication headers of one request (a provider is asked each time)."""
        value = await key.fetch()
        if self.azure and not key.is_bearer_token:
            return {"api-key": value}
        return {"Authorization": f"Bearer {value}"}


def _ws(url: str) -> str:
    """``url`` with its scheme turned to ws/wss."""
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url
