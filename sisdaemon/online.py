"""``sisdaemon check-config --online``: ask Canvas whether the configuration will work, before the first file does.

Beyond the offline checks: the token is accepted (``GET /api/v1/users/self``), the account can be read
(``GET /api/v1/accounts/:id``), the token's user holds ``import_sis`` in it (``GET /api/v1/accounts/:id/permissions
?permissions[]=import_sis&permissions[]=manage_sis``: the POST of an SIS import needs ``import_sis``; ``manage_sis``
alone lets a user read imports but not create one, docs/canvas-api.md), and each feed's ``batch_mode_term_id`` is a
term of the account (``GET /api/v1/accounts/:id/terms/:term``; an unknown one makes every POST answer 404). Every
call has the client's whole-call deadline (``canvas.timeout_seconds``).
"""

from __future__ import annotations

from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind
from sisdaemon.config import Settings


class Unreachable(Exception):
    """Canvas could not be asked (down, a timeout, throttling): nothing was learnt about the configuration."""


def _unreachable(error: CanvasError) -> bool:
    return error.kind in (FaultKind.TRANSIENT, FaultKind.THROTTLED)


def check_online(settings: Settings, client: CanvasClient) -> list[str]:
    """One ``"<dotted.key>: <message>"`` per problem Canvas shows (``[]`` when all is well).

    Raises Unreachable when Canvas cannot be asked.
    """
    token_key = "canvas.token_env" if settings.canvas.token_env else "canvas.token_file"
    try:
        me = client.get_self()
    except CanvasError as error:
        if _unreachable(error):
            raise Unreachable(str(error)) from None
        return [f"{token_key}: Canvas does not accept the token ({error})"]
    who = f"{me.get('name', 'the token owner')} (user {me.get('id')})"
    reference = settings.canvas.account_id
    try:
        account = client.resolve_account()
    except CanvasError as error:
        if _unreachable(error):
            raise Unreachable(str(error)) from None
        return [f"canvas.account_id: {reference}: {who} cannot read this account ({error})"]
    where = f"account {account.get('id')} ({account.get('name', '')})"
    problems = []
    try:
        granted = client.permissions(["import_sis", "manage_sis"])
    except CanvasError as error:
        if _unreachable(error):
            raise Unreachable(str(error)) from None
        problems.append(f"canvas.account_id: cannot read the permissions of {who} in {where} ({error})")
    else:
        if granted.get("import_sis") is not True:
            also = "; manage_sis alone is not enough to create imports" if granted.get("manage_sis") is True else ""
            problems.append(f"{token_key}: {who} may not run SIS imports in {where} (no import_sis permission{also})")
    for index, feed in enumerate(settings.feeds):
        term = feed.import_.batch_mode_term_id
        if term is None:
            continue
        try:
            client.get_term(term)
        except CanvasError as error:
            if _unreachable(error):
                raise Unreachable(str(error)) from None
            if error.kind is FaultKind.NOT_FOUND:
                problems.append(f"feeds[{index}].import.batch_mode_term_id: {term}: no such term in {where}")
            else:
                problems.append(f"feeds[{index}].import.batch_mode_term_id: {term}: cannot be read ({error})")
    return problems
