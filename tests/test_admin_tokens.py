"""The admin of API tokens: made with a secret shown once, listed, edited, revoked."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from alarms import tokens
from alarms.models import AlarmToken

pytestmark = pytest.mark.django_db

LIST = "/admin/alarms/alarmtoken/"
ADD = f"{LIST}add/"
SECRET = re.compile(r"alm_[A-Za-z0-9_-]{40}")


def change(token: AlarmToken) -> str:
    return f"{LIST}{token.pk}/change/"


def add(admin_client: Client, **fields: Any) -> Any:
    data = {
        "name": "ci",
        "scopes": ["publish", "read"],
        "audience": "authenticated",
        "storm_limit": "",
        "expires_at_0": "",
        "expires_at_1": "",
        **fields,
    }
    return admin_client.post(ADD, data)


def test_the_add_form_offers_scopes_as_checkboxes_and_no_digest(admin_client: Client) -> None:
    page = admin_client.get(ADD).content.decode()

    for scope in ("publish", "withdraw", "read"):
        assert f'type="checkbox" name="scopes" value="{scope}"' in page
    assert 'name="digest"' not in page
    assert 'name="prefix"' not in page


def test_adding_a_token_shows_its_secret_once(admin_client: Client, admin_user: Any) -> None:
    response = add(admin_client)

    assert response.status_code == 200  # the page itself, not a redirect
    assert "no-store" in response["Cache-Control"]
    [secret] = set(SECRET.findall(response.content.decode()))
    token = AlarmToken.objects.get()
    assert tokens.authenticate(secret) == token
    assert (token.name, token.scope_set, token.created_by) == (
        "ci",
        {"publish", "read"},
        admin_user,
    )
    # Never again: not on the list, not on the change form, not in a message.
    for page in (admin_client.get(LIST), admin_client.get(change(token)), admin_client.get(ADD)):
        text = page.content.decode()
        assert secret not in text
        assert token.digest not in text
        assert not SECRET.search(text)


def test_the_list_shows_name_prefix_scopes_and_times(admin_client: Client) -> None:
    token, _ = tokens.create_token("pager", scopes=["withdraw"])

    text = admin_client.get(LIST).content.decode()

    for column in ("name", "prefix_display", "scopes", "last_used_at", "expires_at", "revoked_at"):
        assert f'class="sortable column-{column}' in text or f'class="column-{column}' in text
    assert "pager" in text and f'<td class="field-prefix_display">{token.prefix}…</td>' in text
    assert "withdraw" in text
    assert token.digest not in text


def test_editing_a_token_keeps_its_secret(admin_client: Client) -> None:
    token, secret = tokens.create_token("ci", scopes=["publish"])
    ops = Group.objects.create(name="ops")

    response = admin_client.post(
        change(token),
        {
            "name": "ci-renamed",
            "scopes": ["publish", "withdraw"],
            "audience": "selected",
            "groups": [ops.pk],
            "storm_limit": "3",
            "expires_at_0": "",
            "expires_at_1": "",
        },
    )

    assert response.status_code == 302
    token.refresh_from_db()
    assert (token.name, token.scopes, token.storm_limit) == ("ci-renamed", "publish withdraw", 3)
    assert list(token.groups.all()) == [ops]
    assert tokens.authenticate(secret) == token


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"scopes": []}, "scopes"),
        ({"scopes": ["admin"]}, "scopes"),
        ({"expires_at_0": "2001-01-01", "expires_at_1": "00:00"}, "expires_at"),
        ({"audience": "selected"}, "groups"),
    ],
)
def test_the_add_form_refuses_what_would_make_a_bad_token(
    admin_client: Client, fields: dict[str, Any], field: str
) -> None:
    response = add(admin_client, **fields)

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not AlarmToken.objects.exists()
    assert not SECRET.search(response.content.decode())


def test_the_revoke_action_refuses_the_token_from_the_next_request(
    admin_client: Client, client: Client
) -> None:
    token, secret = tokens.create_token("ci", scopes=["read"])
    _, other_secret = tokens.create_token("other", scopes=["read"])
    api = "/alarms/api/v1/alarms"
    assert client.get(api, headers={"Authorization": f"Bearer {secret}"}).status_code == 200

    response = admin_client.post(
        LIST, {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )

    assert "Revoked 1 token" in response.content.decode()
    assert client.get(api, headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert client.get(api, headers={"Authorization": f"Bearer {other_secret}"}).status_code == 200
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_only_staff_with_the_permission_see_tokens(client: Client) -> None:
    assert client.get(LIST).status_code == 302  # to the login page
