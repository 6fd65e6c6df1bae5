"""`${NAME}` references in header values: checked when the state repo is validated, expanded
from the process environment when a request is made (so secrets never enter the repo).

`$$` is a literal `$`; any other `$` is an error. Pure: the environment is an argument.
"""

from __future__ import annotations

import re
from typing import Mapping

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_env_refs(value: str) -> str | None:
    """None if every `$` in `value` is `${NAME}` or `$$`; else a message (never quoting `value`)."""
    i, n = 0, len(value)
    while i < n:
        if value[i] != "$":
            i += 1
            continue
        nxt = value[i + 1 : i + 2]
        if nxt == "$":
            i += 2
            continue
        if nxt == "{":
            end = value.find("}", i + 2)
            if end < 0:
                return (f"unterminated '${{' at character {i + 1}: write ${{NAME}}, or $$ for a "
                        f"literal $")
            name = value[i + 2 : end]
            if not _ENV_NAME.fullmatch(name):
                return (f"invalid variable name '{name}' in '${{{name}}}' at character {i + 1}: "
                        f"use letters, digits and '_', not starting with a digit")
            i = end + 1
            continue
        return f"'$' at character {i + 1} must start ${{NAME}}, or be written $$ for a literal $"
    return None


class UnsetVariable(ValueError):
    """A `${NAME}` whose variable is not in the environment; `.name` says which."""

    def __init__(self, name: str) -> None:
        super().__init__(f"environment variable {name} is not set")
        self.name = name


def expand_env_refs(value: str, environ: Mapping[str, str]) -> str:
    """`value` with `${NAME}` replaced from `environ` and `$$` by `$`.

    Raises ValueError naming the variable (never the value) if it is unset (UnsetVariable) or
    the syntax is bad.
    """
    problem = check_env_refs(value)
    if problem:
        raise ValueError(problem)
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        j = value.find("$", i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        if value[j + 1] == "$":
            out.append("$")
            i = j + 2
        else:
            end = value.index("}", j + 2)
            name = value[j + 2 : end]
            if name not in environ:
                raise UnsetVariable(name)
            out.append(environ[name])
            i = end + 1
    return "".join(out)
