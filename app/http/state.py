"""What the application holds while it runs: built once by the lifespan
(:func:`app.main.create_app`), and the only thing the HTTP layer reads from the app."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import Scope

from app.security.authenticator import Authenticator
from app.services.archive import Archive
from app.services.jobs import Jobs
from app.services.shares import Shares
from app.services.signin import SignIn

#: The key of :class:`Running` in the lifespan state (Starlette copies it into every
#: request's ``request.state``).
STATE_KEY = "filmless"


@dataclass(frozen=True)
class Running:
    archive: Archive
    authenticator: Authenticator
    shares: Shares
    jobs: Jobs
    #: Browser sign-in of the staff console.
    signin: SignIn


def running_scope(scope: Scope) -> Running:
    """The same, from an ASGI scope (for middlewares that run before routing)."""
    state: Running = scope["state"][STATE_KEY]
    return state


def running(connection: HTTPConnection) -> Running:
    """The running application's state, from the lifespan state of ``connection``."""
    state: Running = getattr(connection.state, STATE_KEY)
    return state
