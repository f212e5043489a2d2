"""Pure parts of issue 13's router changes: when auth must refuse to start, alias renaming."""

from __future__ import annotations

from corral.router.config import RouterSettings, auth_line, auth_problem, parse_keys
from corral.router.context import rename_model


def test_keys_configured_but_none_found_is_a_problem_unless_allowed() -> None:
    asked = RouterSettings(api_keys_env="MY_KEYS")
    problem = auth_problem(asked, 0)
    assert problem and "MY_KEYS" in problem and "allow_no_auth = true" in problem
    assert auth_problem(asked, 2) is None
    assert auth_problem(RouterSettings(api_keys_env="MY_KEYS", allow_no_auth=True), 0) is None
    assert auth_problem(RouterSettings(), 0) is None  # not asked for: no auth, said at start
    assert auth_line(RouterSettings(), 0, 0).startswith("auth OFF")
    assert auth_line(asked, 3, 3) == "auth on: 3 API key(s) from $MY_KEYS"
    # A keys file turns auth on even while it holds no key (every request refused): no problem.
    assert auth_problem(RouterSettings(api_keys_env="MY_KEYS", keys_file="k.toml"), 0) is None
    assert parse_keys(" a, ,b ") == {"a", "b"} and parse_keys(None) == frozenset()


def test_rename_model_names_the_alias_in_json_and_sse() -> None:
    rename = (b'"m1"', b'"gpt-alias"')
    assert rename_model(b'{"id":"x","model":"m1","object":"chat"}', rename) == (
        b'{"id":"x","model":"gpt-alias","object":"chat"}'
    )
    sse = b'data: {"model": "m1", "choices": [{"text": "m1"}]}\n\n'
    assert rename_model(sse, rename) == b'data: {"model": "gpt-alias", "choices": [{"text": "m1"}]}\n\n'
    assert rename_model(b'{"model":"m10"}', rename) == b'{"model":"m10"}'  # another model untouched
