"""What every double here shares: an HTTP(S) server on 127.0.0.1 served from a daemon thread."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from http.server import ThreadingHTTPServer

# A client has this long to finish its TLS handshake (Go's net/http, which serves the Kubernetes
# API, gives a slow handshake a deadline too); then only its own connection is dropped.
TLS_HANDSHAKE_SECONDS = 30.0


class TlsHTTPServer(ThreadingHTTPServer):
    """HTTPS with each connection's TLS handshake in that connection's own thread, as a real API
    server does it. Wrapping the listening socket instead (``context.wrap_socket(httpd.socket)``)
    runs every handshake inside ``accept()`` in the one serving thread: one client that has
    connected but not yet sent its ClientHello (a busy asyncio loop in a triggerer, a process
    starved of CPU) then stalls every other client of the double, and clients without a read
    timeout wait for ever. tests/test_doubles.py shows a silent client no longer does."""

    daemon_threads = True

    def __init__(self, address, handler, context: ssl.SSLContext):
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request, client_address):
        request.settimeout(TLS_HANDSHAKE_SECONDS)
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except OSError:  # gone, silent for too long, or not speaking TLS (ssl.SSLError): its own loss
            return
        connection.settimeout(None)
        try:
            super().finish_request(connection, client_address)
        finally:  # what shutdown_request() does for a plain socket: FIN now, then close
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                connection.close()


class LocalServer:
    """Subclasses set ``self.httpd`` (a ThreadingHTTPServer, or a TlsHTTPServer) in ``__init__``."""

    def start(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name=type(self).__name__).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
