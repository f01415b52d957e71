"""What every double here shares: an HTTP server on 127.0.0.1 served from a daemon thread."""

from __future__ import annotations

import threading


class LocalServer:
    """Subclasses set ``self.httpd`` (a ThreadingHTTPServer) in ``__init__``."""

    def start(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name=type(self).__name__).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
