"""An nginx of our own on 127.0.0.1 serving a directory, for pull tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """serve(directory) -> base URL; nginx stops at the end of the test."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    started: list[Path] = []

    def serve(root: Path) -> str:
        port = free_port()
        conf_dir = tmp_path / f"nginx-{port}"
        conf_dir.mkdir()
        conf = conf_dir / "nginx.conf"
        conf.write_text(f"""
user root;
worker_processes 1;
daemon on;
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {conf_dir}/access.log;
    client_body_temp_path {conf_dir}/body;
    proxy_temp_path {conf_dir}/proxy;
    fastcgi_temp_path {conf_dir}/fastcgi;
    uwsgi_temp_path {conf_dir}/uwsgi;
    scgi_temp_path {conf_dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex off;
    }}
}}
""")
        subprocess.run([binary, "-c", str(conf), "-p", str(conf_dir)], check=True)
        started.append(conf_dir)
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield serve
    for conf_dir in started:
        pid = conf_dir / "nginx.pid"
        if pid.exists():
            subprocess.run(["kill", pid.read_text().strip()], check=False)
