"""``t3vis serve``: the explorer (``panel serve apps/``), on this machine only unless a team server is asked for.

``panel serve`` with no ``--address`` listens on every interface (0.0.0.0 and [::]) with no login, and the explorer
shows a run's data and runs its models on request. So the default here is loopback (127.0.0.1), where only this
machine's users reach it; a non-loopback ``--address`` must come with a login (basic auth or an OAuth provider)
and the websocket origins users' browsers will send. The cookie secret travels to Panel in its environment, not on
its command line (which ``ps`` shows to every user); for the same reason a login is best a file of users and
passwords. Imports no panel: this only builds a command and runs it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import T3VisError

#: Panel options ``t3vis serve`` sets itself (after ``--`` they would bypass its checks).
OWN_OPTIONS = ("--address", "--port", "--allow-websocket-origin", "--args", "--basic-auth", "--cookie-secret")
#: Environment variables through which Panel takes a login.
AUTH_ENV = ("PANEL_BASIC_AUTH", "PANEL_OAUTH_PROVIDER")
COOKIE_ENV = ("PANEL_COOKIE_SECRET", "BOKEH_COOKIE_SECRET")
#: Addresses that listen on every interface.
WILDCARDS = ("0.0.0.0", "::", "[::]", "")


@dataclass(frozen=True)
class ServeCommand:
    argv: list[str]
    env: dict[str, str]
    url: str
    team: bool


def is_loopback(address: str) -> bool:
    """Whether ``address`` only listens on this machine (``localhost``, 127.0.0.0/8, ::1); host names are not."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def apps_dir() -> Path:
    """The ``apps/`` directory ``panel serve`` serves, next to the t3vis package in a checkout."""
    path = Path(__file__).resolve().parents[1] / "apps"
    if not (path / "main.py").is_file():
        raise T3VisError(f"{path / 'main.py'} not found: `t3vis serve` serves the apps/ directory of a t3vis "
                         "checkout (install with `pip install -e .` from the checkout)")
    return path


def free_port(address: str) -> int:
    """A port free on ``address`` now (Bokeh's websocket origins need the number, so 0 cannot be passed on)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((address.strip("[]"), 0))
        return s.getsockname()[1]


def serve_command(*, address: str = "127.0.0.1", port: int = 5006, runs_dir: str | None = None,
                  origins: list[str] | None = None, basic_auth: str | None = None, cookie_secret: str | None = None,
                  num_threads: int | None = None, show: bool = False, extra: list[str] | None = None,
                  environ: dict[str, str] | None = None) -> ServeCommand:
    """The ``panel serve apps/`` command line and environment for these options, or a T3VisError saying why not."""
    environ = dict(os.environ if environ is None else environ)
    extra = [a for a in (extra or []) if a != "--"]
    clash = [a.split("=", 1)[0] for a in extra if a.split("=", 1)[0] in OWN_OPTIONS]
    if clash:
        raise T3VisError(f"{clash[0]}: give it as a `t3vis serve` option, not after `--` (see `t3vis serve --help`)")
    port = port or free_port(address)
    team = not is_loopback(address)
    env = {}
    login = bool(basic_auth) or "--oauth-provider" in {a.split("=", 1)[0] for a in extra} or any(
        environ.get(k) for k in AUTH_ENV)
    if team:
        if not login:
            raise T3VisError(
                f"--address {address} serves the explorer to other machines, so it needs a login: add --basic-auth "
                "FILE (a JSON file of {\"user\": \"password\"}) or an OAuth provider after `--` (e.g. -- "
                "--oauth-provider github --oauth-key ID --oauth-secret SECRET); or leave out --address to serve "
                "this machine only")
        if not origins and address in WILDCARDS:
            raise T3VisError(f"--address {address} listens on every interface: add --allow-websocket-origin "
                             "HOST:PORT for the name users type in their browser (e.g. t3vis.example.org:443)")
        origins = origins or [f"{address}:{port}"]
    else:
        origins = [*(origins or []), f"localhost:{port}", f"127.0.0.1:{port}"]
    if login and cookie_secret:
        env["PANEL_COOKIE_SECRET"] = cookie_secret
    elif login and not any(environ.get(k) for k in COOKIE_ENV):
        env["PANEL_COOKIE_SECRET"] = secrets.token_urlsafe(32)  # signs login cookies; a restart logs users out
    argv = [sys.executable, "-m", "panel", "serve", str(apps_dir()), "--address", address, "--port", str(port)]
    for origin in dict.fromkeys(origins):
        argv += ["--allow-websocket-origin", origin]
    if basic_auth:  # not PANEL_BASIC_AUTH: Panel 1.9 lower-cases that variable (passwords and file paths)
        argv += ["--basic-auth", basic_auth]
    if num_threads:
        argv += ["--num-threads", str(num_threads)]
    if show:
        argv.append("--show")
    argv += extra
    if runs_dir:
        argv += ["--args", "--runs-dir", str(Path(runs_dir).expanduser().resolve())]
    host = f"[{address.strip('[]')}]:{port}" if ":" in address else f"{address}:{port}"
    if address in WILDCARDS:
        host = origins[0]
    return ServeCommand(argv=argv, env=env, url=f"http://{host}/apps", team=team)


def run(command: ServeCommand) -> None:
    """Replace this process with the server, so signals (Ctrl-C, SIGTERM) reach it directly."""
    who = "users who log in" if command.team else "this machine only"
    print(f"t3vis: serving {command.url} ({who})", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execve(command.argv[0], command.argv, {**os.environ, **command.env})
