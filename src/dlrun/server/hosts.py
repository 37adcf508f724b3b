"""Which addresses a server listens on, which Host headers it accepts, and the URL its clients should use.

MLflow 3's security middleware accepts only localhost and private addresses in the Host header unless
``--allowed-hosts`` says otherwise; a client reaching the server by any other name gets HTTP 403.
"""

from __future__ import annotations

import ipaddress
import socket

from dlrun.errors import UserError

EVERYWHERE = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """True when ``host`` (a name or address) is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host in EVERYWHERE:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_host(host: str) -> None:
    """UserError naming ``--host`` when it is no address this machine can listen on."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise UserError(f"--host {host}: not a host name or address ({err})") from None
    with socket.socket(infos[0][0]) as sock:
        try:
            sock.bind((host, 0))
        except OSError as err:
            raise UserError(f"--host {host}: this machine cannot listen there ({err.strerror})") from None


def served_names(host: str) -> list[str]:
    """The names and addresses clients may use to reach a server bound to ``host``: for 0.0.0.0 (or ::) the
    machine's host name, its full name and every address of its interfaces; else ``host`` itself."""
    if host not in EVERYWHERE:
        return [host]
    import psutil

    names = [socket.gethostname(), socket.getfqdn(), "localhost"]
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(address.address.split("%")[0])
            if ip.is_link_local:  # fe80::: not reachable without the interface's name
                continue
            if ip.version == 4 or host == "::":
                names.append(f"[{ip}]" if ip.version == 6 else str(ip))
    return list(dict.fromkeys(n for n in names if n))


def allowed_hosts(names: list[str], port: int) -> list[str]:
    """MLflow's ``--allowed-hosts`` for clients using ``names``: each bare and with the port (the Host header)."""
    return list(dict.fromkeys(entry for name in names for entry in (name, f"{name}:{port}")))


def client_url(host: str, port: int, names: list[str] | None = None) -> str:
    """The URL to give clients: the bound address, or for 0.0.0.0 the machine's first name that is not loopback."""
    names = names if names is not None else served_names(host)
    outside = [n for n in names if not is_loopback(n.strip("[]"))]
    name = (outside or names or ["127.0.0.1"])[0]
    if ":" in name and not name.startswith("["):  # a bare IPv6 address
        name = f"[{name}]"
    return f"http://{name}:{port}"


def open_to_others_warning(host: str, what: str) -> str:
    """The one line said when ``what`` listens beyond this machine with no logins (``--no-auth``)."""
    return (
        f"dlrun: warning: --no-auth: {what} on {host} has no logins; anyone who can reach this port can read, "
        "change and delete every run and download every artifact"
    )


def local_url(host: str, port: int) -> str:
    """Where this machine itself reaches a server bound to ``host`` (its health checks)."""
    if host in EVERYWHERE:
        host = "::1" if host == "::" else "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
