"""What address a host name stands for, looked up once and off the event loop.

A machine is what its address is, not what its name says: ``127.1``, ``0x7f.1`` and a DNS
name an attacker controls can all stand for another machine's address. The deploy
preflight resolves the host once, compares the result with every other machine's, and
then connects to that address only, so a name that changes its answer later changes
nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket


class ResolveError(Exception):
    """The host name has no address."""


def normal(address: str) -> str:
    """One spelling per address: IPv4-mapped IPv6 becomes IPv4, IPv6 is compressed."""
    parsed = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` (through the system's resolver, in its order)."""
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(f"cannot resolve {host}: {exc}") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in found:
        address = normal(str(sockaddr[0]))
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ResolveError(f"{host} has no address")
    return addresses
