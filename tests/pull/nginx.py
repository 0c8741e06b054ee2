"""Starting an nginx of our own on 127.0.0.1 that serves one directory (tests and bench/bench_pull.py)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

CONFIG = """
user root;
worker_processes 1;
daemon on;
pid {conf}/nginx.pid;
error_log {conf}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {conf}/access.log;
    client_body_temp_path {conf}/body;
    proxy_temp_path {conf}/proxy;
    fastcgi_temp_path {conf}/fastcgi;
    uwsgi_temp_path {conf}/uwsgi;
    scgi_temp_path {conf}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex off;
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_nginx(root: Path, workdir: Path) -> tuple[str, Path]:
    """Serve root; returns the base URL and the pid file (kill its pid to stop)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf_dir = workdir / f"nginx-{port}"
    conf_dir.mkdir(parents=True)
    conf = conf_dir / "nginx.conf"
    conf.write_text(CONFIG.format(conf=conf_dir, port=port, root=root))
    subprocess.run([binary, "-c", str(conf), "-p", str(conf_dir)], check=True)
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return f"http://127.0.0.1:{port}", conf_dir / "nginx.pid"


def stop_nginx(pid_file: Path) -> None:
    if pid_file.exists():
        subprocess.run(["kill", pid_file.read_text().strip()], check=False)
