"""core.envrefs: `${NAME}` syntax checks and expansion from a given environment."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.envrefs import UnsetVariable, check_env_refs, expand_env_refs


def test_expand() -> None:
    env = {"TOKEN": "t0k", "A_1": "$"}
    assert expand_env_refs("Bearer ${TOKEN} costs $$5", env) == "Bearer t0k costs $5"
    assert expand_env_refs("${A_1}${A_1}$$", env) == "$$$"
    assert expand_env_refs("plain", {}) == "plain"


def test_unset_names_the_variable_not_the_value() -> None:
    with pytest.raises(UnsetVariable, match="environment variable TOKEN is not set") as e:
        expand_env_refs("secret-prefix ${TOKEN}", {})
    assert e.value.name == "TOKEN" and "secret" not in str(e.value)


@pytest.mark.parametrize("value, words", [
    ("${X", "unterminated"), ("${1X}", "invalid variable name"), ("$X", "must start"),
    ("a$", "must start"), ("${}", "invalid variable name"),
])
def test_bad_syntax(value: str, words: str) -> None:
    problem = check_env_refs(value)
    assert problem is not None and words in problem
    with pytest.raises(ValueError, match=words):
        expand_env_refs(value, {"X": "x"})


@given(st.text(alphabet="ab${}_X", max_size=20))
def test_expand_iff_checked(value: str) -> None:
    env = {"X": "1", "a": "2", "b": "3", "_": "4", "ab": "5"}
    if check_env_refs(value) is None:
        try:
            expand_env_refs(value, env)
        except UnsetVariable:
            pass
    else:
        with pytest.raises(ValueError):
            expand_env_refs(value, env)
