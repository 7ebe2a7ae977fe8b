"""A network that fails for a moment, on loopback: a TCP front that resets its first
connections (a RST, as a middlebox or a restarting load balancer gives, during the TLS
handshake) and then passes every byte through to a server behind it."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class ResetFirst:
    """Resets the first `resets` connections as soon as they are accepted, then relays each
    later one to `target` (`host:port`) untouched, TLS and all. `accepted` counts them."""

    def __init__(self, target: str, resets: int = 1, host: str = "127.0.0.1") -> None:
        self.target, self.resets = target, resets
        self.listener = socket.create_server((host, 0))
        self.listener.settimeout(0.2)
        self.address = "{}:{}".format(*self.listener.getsockname()[:2])
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []
        self.accepted = 0

    def start(self) -> ResetFirst:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self.threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.resets:
                # linger 0: close() sends a RST, so the client's handshake reads ECONNRESET
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            host, port = self.target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)), timeout=5)
            self.sockets += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                thread = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                thread.start()
                self.threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(0.2)
        try:
            while not self.stopping.is_set():
                try:
                    chunk = source.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                sink.sendall(chunk)
        except OSError:
            pass  # either end hung up: the relay ends
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
