"""The demo site's own pages are translated, not only the alarms app's."""

from __future__ import annotations

import pytest

from tests.demo import demo_project  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("demo_project")]

HEADLINE = "Operations status for your whole team"


@pytest.mark.parametrize(
    ("language", "headline", "sign_in", "direction"),
    (
        ("ko", "팀 전체를 위한 운영 현황", "로그인", "ltr"),
        ("ja", "チーム全体の運用ステータス", "ログイン", "ltr"),
        ("ar", "حالة العمليات لفريقك بأكمله", "تسجيل الدخول", "rtl"),
    ),
)
def test_home_page_is_translated(client, language, headline, sign_in, direction) -> None:
    response = client.get("/", HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    html = response.content.decode()
    assert f'<html lang="{language}" dir="{direction}">' in html
    assert headline in html
    assert sign_in in html
    assert HEADLINE not in html
    assert "Sign in" not in html


def test_home_page_stays_english_by_default(client) -> None:
    response = client.get("/", HTTP_ACCEPT_LANGUAGE="en")
    assert HEADLINE in response.content.decode()
