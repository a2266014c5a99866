import socket

import pytest

from tests.netguard import ExternalNetworkError


def test_the_suite_refuses_to_reach_a_public_address() -> None:
    with pytest.raises(ExternalNetworkError):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_the_suite_refuses_to_resolve_a_public_name() -> None:
    with pytest.raises(ExternalNetworkError):
        socket.getaddrinfo("example.com", 443)


def test_loopback_stays_allowed() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
    finally:
        server.close()
