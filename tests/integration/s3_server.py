"""A real local S3 server for tests: moto's server app on 127.0.0.1 (a free port), counting traffic.

The app is moto's own ``DomainDispatcherApplication`` served by werkzeug, exactly as
``moto.server.ThreadedMotoServer`` serves it, wrapped in a WSGI middleware that records every
request (method, key, bytes sent in the response body) so tests can measure what a read fetched.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Iterator

from weightzoo_flows.server import free_port

REGION = "us-east-1"


@dataclass
class Traffic:
    """Requests the server answered: [method, path, response body bytes] each.

    A request is recorded when it arrives and its bytes are counted before they are sent, so
    a client that has its answer always finds it counted.
    """

    requests: list[list] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self, method: str, path: str) -> list:
        """Record a request as it arrives; returns its entry (the size is added as it is sent)."""
        entry = [method, path, 0]
        with self.lock:
            self.requests.append(entry)
        return entry

    def reset(self) -> None:
        """Forget what was recorded so far."""
        with self.lock:
            self.requests = []

    def bytes_sent(self, method: str = "GET", containing: str = "") -> int:
        """Response body bytes of the ``method`` requests whose path contains ``containing``."""
        with self.lock:
            return sum(size for m, path, size in self.requests if m == method and containing in path)

    def count(self, method: str = "GET", containing: str = "") -> int:
        """Number of ``method`` requests whose path contains ``containing``."""
        with self.lock:
            return sum(1 for m, path, _ in self.requests if m == method and containing in path)


class _Counting:
    """WSGI middleware: pass through, recording each request and its response body size."""

    def __init__(self, app, traffic: Traffic) -> None:
        self.app, self.traffic = app, traffic

    def __call__(self, environ, start_response):
        entry = self.traffic.start(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))
        for chunk in self.app(environ, start_response):
            entry[2] += len(chunk)
            yield chunk


@contextlib.contextmanager
def s3_server(monkeypatch, bucket: str = "zoos") -> Iterator[tuple[str, Traffic]]:
    """Run the server, point the AWS/weightzoo environment at it, create ``bucket``; yield
    (endpoint URL, Traffic)."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    traffic = Traffic()
    app = _Counting(DomainDispatcherApplication(create_backend_app), traffic)
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_REGION": REGION, "WEIGHTZOO_S3_ENDPOINT": endpoint}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        _create_bucket(endpoint, bucket)
        yield endpoint, traffic
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _create_bucket(endpoint: str, bucket: str) -> None:
    import boto3  # comes with moto

    boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(Bucket=bucket)


def fresh_url() -> str:
    """A zoo prefix no other test uses (readers cache arrays per location and version)."""
    return f"s3://zoos/tests/{uuid.uuid4().hex[:8]}"
