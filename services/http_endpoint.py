"""A small HTTP/1.1 endpoint on the service's event loop (no thread): read one request, answer it, close.

The /metrics endpoints of the cloud and the edge and the edge's live page are such endpoints. A request head
over 8 kB, or one that does not arrive within 5 s, is dropped; a malformed one gets 400. Subclasses answer a
parsed `Request` by writing to the connection (`send` for a whole response; a stream writes its own parts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Request:
    """The request line: method and path (query string removed), as bytes; header names lower-cased."""

    method: bytes
    path: bytes
    headers: Mapping[bytes, bytes] = field(default_factory=dict)


def response(status: bytes, body: bytes, *, content_type: bytes = b"text/plain; charset=utf-8", extra: bytes = b"",
             head_only: bool = False) -> bytes:
    """A whole HTTP/1.1 response that closes the connection; `extra` holds further header lines."""
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"Connection: close\r\n\r\n" + (b"" if head_only else body))


async def send(writer: asyncio.StreamWriter, status: bytes, body: bytes, **headers: object) -> None:
    """Write a whole response (see `response` for the keyword arguments) and wait until it is sent."""
    writer.write(response(status, body, **headers))  # type: ignore[arg-type]
    await writer.drain()


class HttpEndpoint:
    """Listens on host:port once started; `answer` is called once per connection with its request."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"the {type(self).__name__} is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self._port)

    async def stop(self) -> None:
        server, self._server = self._server, None  # streams see `serving` turn False and end
        if server is not None:
            server.close()
            await server.wait_closed()

    async def answer(self, request: Request, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=REQUEST_TIMEOUT_S)
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(head) > MAX_REQUEST_BYTES or len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
                await send(writer, b"400 Bad Request", b"bad request\n")
            else:
                headers = {}
                for line in lines[1:]:
                    name, colon, value = line.partition(b":")
                    if colon:
                        headers[name.strip().lower()] = value.strip()
                await self.answer(Request(parts[0], parts[1].split(b"?", 1)[0], headers), writer)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
