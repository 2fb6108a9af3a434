"""Network guard for the workflow tests: put this folder on PYTHONPATH and set AFFPIPE_NETGUARD_LOG.

Every Python process of the run (Snakemake and each job it starts) then refuses internet sockets
(IPv4/IPv6 connect, and name lookups) and appends what was attempted to the log file, so a test can
assert that a whole pipeline run never reached for the network (no model-hub download, no update
check). Unix-domain sockets (multiprocessing, DataLoader workers) are untouched.
"""

import os
import socket

_LOG = os.environ.get("AFFPIPE_NETGUARD_LOG")


def _record(what):
    with open(_LOG, "a") as f:
        f.write(f"pid {os.getpid()}: {what}\n")


if _LOG:
    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def _guard(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            _record(f"connect {address!r}")
            raise OSError(f"network access blocked by the affpipe test guard: {address!r}")

    def connect(self, address):
        _guard(self, address)
        return _connect(self, address)

    def connect_ex(self, address):
        _guard(self, address)
        return _connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            _record(f"getaddrinfo {host!r}")
            raise socket.gaierror(f"name lookup blocked by the affpipe test guard: {host!r}")
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
