"""A transaction-mode connection pooler for tests, like Supabase's port 6543 or PgBouncer's
`pool_mode = transaction`: a client's transactions run on whichever server connection
is free, so nothing a client leaves on a connection (prepared statements, session
settings, advisory locks, temporary tables) is there for its next transaction.

To make that certain rather than likely, each client gets its own `servers` server
connections and every transaction goes to the next one in turn. The wire protocol is
relayed message by message; a server connection is handed back when it reports
ReadyForQuery outside a transaction with nothing more asked of it.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
from pathlib import Path

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
# Extended-protocol messages that leave a request open until the client's Sync.
_EXTENDED = set(b"PBDECH")


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One typed message: (type byte, the whole message including its header)."""
    header = _read_exactly(sock, 5)
    (length,) = struct.unpack("!I", header[1:])
    return header[:1], header + _read_exactly(sock, length - 4)


def _read_startup(client: socket.socket) -> bytes | None:
    """The client's StartupMessage, declining SSL and GSS encryption on the way."""
    while True:
        (length,) = struct.unpack("!I", _read_exactly(client, 4))
        body = _read_exactly(client, length - 4)
        (code,) = struct.unpack("!I", body[:4])
        if code in (_SSL_REQUEST, _GSSENC_REQUEST):
            client.sendall(b"N")
            continue
        if code == _CANCEL_REQUEST:
            return None
        return struct.pack("!I", length) + body


def _hang_up(sock: socket.socket) -> None:
    """Close for the peer too: a plain close leaves a read blocked in another thread,
    and the connection open."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class TransactionPooler:
    """Listens on 127.0.0.1; relays to the embedded server's unix socket in `socket_dir`."""

    def __init__(self, socket_dir: str | Path, servers: int = 2, port: int = 5432):
        self.upstream = str(Path(socket_dir) / f".s.PGSQL.{port}")
        self.servers = servers
        self.transactions = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._count_lock = threading.Lock()
        self._clients: set[socket.socket] = set()

    @property
    def url(self) -> str:
        port = self._listener.getsockname()[1]
        return f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"

    def __enter__(self) -> TransactionPooler:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shut_down()

    def shut_down(self) -> None:
        """Refuse new clients and hang up on every client: the server is gone."""
        _hang_up(self._listener)
        for client in list(self._clients):
            _hang_up(client)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            # Messages are relayed one by one, in small writes: without TCP_NODELAY, Nagle's
            # algorithm held each behind the client's delayed ACK (40 ms a round trip).
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _open_server(self, startup: bytes, client: socket.socket | None) -> socket.socket:
        """A server connection started like the client's; its greeting goes to `client`."""
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.connect(self.upstream)
        server.sendall(startup)
        while True:
            kind, message = _read_message(server)
            if client is not None:
                client.sendall(message)
            if kind == b"E":
                raise ConnectionError("the server refused the connection")
            if kind == b"Z":
                return server

    def _serve(self, client: socket.socket) -> None:
        servers: list[socket.socket] = []
        self._clients.add(client)
        try:
            startup = _read_startup(client)
            if startup is None:
                return
            servers.append(self._open_server(startup, client))
            servers += [self._open_server(startup, None) for _ in range(self.servers - 1)]
            _Session(self, client, servers).run()
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(client)
            for sock in [client, *servers]:
                _hang_up(sock)

    def _count_transaction(self) -> None:
        with self._count_lock:
            self.transactions += 1


class _Session:
    """One client's traffic, spread over its server connections transaction by transaction."""

    def __init__(self, pooler: TransactionPooler, client: socket.socket, servers: list):
        self.pooler = pooler
        self.client = client
        self.servers = servers
        self.turns = itertools.cycle(range(len(servers)))
        self.lock = threading.Lock()
        self.client_lock = threading.Lock()
        self.current: int | None = None
        self.awaited = 0  # ReadyForQuery messages still to come
        self.open_request = False  # extended-protocol messages sent since the last Sync

    def run(self) -> None:
        for index in range(len(self.servers)):
            threading.Thread(target=self._relay_server, args=(index,), daemon=True).start()
        while True:
            kind, message = _read_message(self.client)
            if kind == b"X":
                return
            with self.lock:
                if self.current is None:
                    self.current = next(self.turns)
                    self.pooler._count_transaction()
                if kind in (b"S", b"Q"):
                    self.awaited += 1
                    self.open_request = False
                elif kind[0] in _EXTENDED:
                    self.open_request = True
                self.servers[self.current].sendall(message)

    def _relay_server(self, index: int) -> None:
        server = self.servers[index]
        try:
            while True:
                kind, message = _read_message(server)
                if kind == b"Z":  # hand the connection back before the client hears
                    idle = message[5:6] == b"I"
                    with self.lock:
                        self.awaited -= 1
                        if idle and self.awaited == 0 and not self.open_request:
                            self.current = None
                with self.client_lock:
                    self.client.sendall(message)
        except (ConnectionError, OSError):
            _hang_up(self.client)
