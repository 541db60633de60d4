"""Storage URLs without their secrets: the one implementation of masking a URL's
password, used on the head by the store's scripts and on the controller by
tsubmit/optuna/ (which loads this file), so both print the same thing.

Pure functions, standard library only.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# scheme://userinfo@rest: userinfo runs to the LAST @ before the path, as in
# RFC 3986, so a password holding @ (u:p@ss@host) is masked whole.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@(.*)$", re.S)


def mask_url(url: str) -> str:
    """URL with its password replaced by ***, for printing."""
    match = _URL.match(url)
    if not match:
        return url
    scheme, userinfo, rest = match.groups()
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{userinfo}@{rest}"


def scrub(text: str, url: str | None) -> str:
    """TEXT with every form of URL's password (raw or percent-decoded) replaced by ***."""
    if not url:
        return text
    text = text.replace(url, mask_url(url))
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(secret, "***")
    return text
