"""Claiming the node's ports before the log is opened.

A node that cannot listen must fail before it opens (and, on the way out,
closes) the log: closing a log trims the active segment's pre-allocated files.
So the HTTP socket is bound here, ahead of the log, and handed to uvicorn;
the gRPC port, which grpc's C core binds itself, is tried here first so that
a port in use is one clear line instead of grpc's RuntimeError and its C-core
log line.
"""

from __future__ import annotations

import contextlib
import socket

from pyproglog.agent.datadir import StartupError, _reason


def _addresses(host: str, port: int, what: str) -> list[tuple[int, tuple[object, ...]]]:
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(
            f"cannot listen on {_fmt(host, port)} ({what}): {_reason(exc)}"
        ) from None
    seen: set[tuple[int, tuple[object, ...]]] = set()
    out: list[tuple[int, tuple[object, ...]]] = []
    for family, _type, _proto, _name, addr in infos:
        key = (family, tuple(addr))
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_sockets(host: str, port: int, what: str) -> list[socket.socket]:
    """Bound (not yet listening) sockets for every address of host:port, as asyncio would.

    With port 0, every address gets the port the first one was given.
    StartupError naming the address when one cannot be bound.
    """
    socks: list[socket.socket] = []
    try:
        for family, addr in _addresses(host, port, what):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Like asyncio: each address family gets its own socket.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            try:
                sock.bind(addr)
            except OSError as exc:
                bound = socks[0].getsockname()[1] if len(socks) > 1 else port
                raise StartupError(
                    f"cannot listen on {_fmt(host, bound)} ({what}): {_reason(exc)}"
                ) from None
    except BaseException:
        close_all(socks)
        raise
    return socks


def check_port_free(host: str, port: int, what: str) -> None:
    """StartupError when host:port cannot be bound now (port 0 always can)."""
    if port != 0:
        close_all(bind_sockets(host, port, what))


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()
