"""Sign-in and tokens under hostile use (issue 8, item 5).

Failed sign-ins are throttled per account and per address on both ways in (the login page and
the token endpoint): the 11th attempt within the window is refused with 429, before the
password is checked. Tokens expire, are listed and revoked by their owner and by engineers, and
a password change or a deactivation revokes them. Unauthenticated API calls get 401 with
`WWW-Authenticate`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import PASSWORD, make_user

pytestmark = [pytest.mark.authz, pytest.mark.django_db]

TOKEN_URL = "/api/v1/auth/token/"
LIMIT = 10  # settings: "login_failures" 10/15m


def _page_login(username, password, address="10.1.0.1"):
    return Client().post(
        "/login/", {"username": username, "password": password}, REMOTE_ADDR=address
    )


def _token_login(username, password, address="10.1.0.1"):
    return APIClient().post(
        TOKEN_URL, {"username": username, "password": password}, REMOTE_ADDR=address
    )


def _api(token: str | None = None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.mark.parametrize("login", [_page_login, _token_login], ids=["page", "token"])
def test_11th_failure_for_one_account_is_429_even_from_new_addresses(login):
    user = make_user("annotator")
    for attempt in range(LIMIT):
        response = login(user.username, "wrong", address=f"10.2.0.{attempt}")
        assert response.status_code in (200, 400), response.status_code  # refused, counted
    # The right password, from a fresh address: still refused, the account is throttled.
    response = login(user.username, PASSWORD, address="10.2.1.1")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    # Case does not make a new account for the counter.
    assert login(user.username.upper(), PASSWORD, address="10.2.1.2").status_code == 429
    # Another account from another address is not affected.
    other = make_user("annotator")
    assert login(other.username, PASSWORD, address="10.2.1.3").status_code in (200, 302)


@pytest.mark.parametrize("login", [_page_login, _token_login], ids=["page", "token"])
def test_11th_failure_from_one_address_is_429_whatever_the_account(login):
    for attempt in range(LIMIT):
        response = login(f"nobody{attempt}", "wrong", address="10.3.0.9")
        assert response.status_code in (200, 400)
    user = make_user("annotator")
    assert login(user.username, PASSWORD, address="10.3.0.9").status_code == 429
    assert login(user.username, PASSWORD, address="10.3.0.10").status_code in (200, 302)


def test_failures_on_either_path_count_for_both():
    user = make_user("annotator")
    for attempt in range(LIMIT // 2):
        assert _page_login(user.username, "wrong", f"10.4.0.{attempt}").status_code == 200
        assert _token_login(user.username, "wrong", f"10.4.1.{attempt}").status_code == 400
    assert _page_login(user.username, PASSWORD, "10.4.2.1").status_code == 429
    assert _token_login(user.username, PASSWORD, "10.4.2.2").status_code == 429


def test_the_refused_login_page_says_why_and_keeps_the_apps_look():
    for attempt in range(LIMIT):
        _page_login("somebody", "wrong", f"10.5.0.{attempt}")
    response = _page_login("somebody", "wrong", "10.5.1.1")
    assert response.status_code == 429
    body = response.content.decode()
    assert "Too many failed sign-ins" in body
    assert 'name="username"' in body


def test_successes_do_not_count():
    user = make_user("annotator")
    for _ in range(LIMIT + 2):
        assert _token_login(user.username, PASSWORD).status_code == 200


def test_unauthenticated_api_call_is_401_with_www_authenticate():
    response = APIClient().get("/api/v1/projects/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")
    response = _api("not-a-real-token").get("/api/v1/projects/")
    assert response.status_code == 401
    assert "WWW-Authenticate" in response


def test_token_expires_and_asking_again_gives_a_new_one(settings):
    settings.IMAGECLEAN_TOKEN_TTL_SECONDS = 3600
    user = make_user("annotator")
    first = _token_login(user.username, PASSWORD).json()
    assert first["expires_at"]
    assert _api(first["token"]).get("/api/v1/projects/").status_code == 200
    Token.objects.filter(user=user).update(created=timezone.now() - timedelta(hours=2))
    response = _api(first["token"]).get("/api/v1/projects/")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    second = _token_login(user.username, PASSWORD).json()
    assert second["token"] != first["token"]
    assert _api(second["token"]).get("/api/v1/projects/").status_code == 200


def test_tokens_listed_by_owner_and_engineers_never_with_the_key():
    annotator, other, engineer = (
        make_user("annotator"),
        make_user("annotator"),
        make_user("site_engineer"),
    )
    keys = {u.pk: _token_login(u.username, PASSWORD).json()["token"] for u in (annotator, other)}
    own = _api(keys[annotator.pk]).get("/api/v1/auth/tokens/").json()["results"]
    assert [row["user"] for row in own] == [annotator.pk]
    client = _api()
    client.force_authenticate(engineer)
    rows = client.get("/api/v1/auth/tokens/").json()["results"]
    assert {annotator.pk, other.pk} <= {row["user"] for row in rows}
    text = str(rows) + str(own)
    assert not any(key in text for key in keys.values())


def test_owner_and_engineer_revoke_others_may_not():
    annotator, other, engineer = (
        make_user("annotator"),
        make_user("annotator"),
        make_user("site_engineer"),
    )
    key = _token_login(annotator.username, PASSWORD).json()["token"]
    other_key = _token_login(other.username, PASSWORD).json()["token"]
    # Someone else's token: a 404, and it still works.
    assert _api(key).delete(f"/api/v1/auth/tokens/{other.pk}/").status_code == 404
    assert _api(other_key).get("/api/v1/projects/").status_code == 200
    # The owner revokes their own.
    assert _api(key).delete(f"/api/v1/auth/tokens/{annotator.pk}/").status_code == 204
    assert _api(key).get("/api/v1/projects/").status_code == 401
    # An engineer revokes anyone's.
    client = _api()
    client.force_authenticate(engineer)
    assert client.delete(f"/api/v1/auth/tokens/{other.pk}/").status_code == 204
    assert _api(other_key).get("/api/v1/projects/").status_code == 401


def test_password_change_over_the_api_revokes_the_token():
    user = make_user("annotator")
    key = _token_login(user.username, PASSWORD).json()["token"]
    wrong = _api(key).post(
        "/api/v1/auth/password/",
        {"old_password": "not-it", "new_password": "a-new-long-passphrase-42"},
    )
    assert wrong.status_code == 400
    assert "old_password" in wrong.json()
    weak = _api(key).post(
        "/api/v1/auth/password/", {"old_password": PASSWORD, "new_password": "123"}
    )
    assert weak.status_code == 400
    assert "new_password" in weak.json()
    assert _api(key).get("/api/v1/projects/").status_code == 200  # nothing changed yet

    done = _api(key).post(
        "/api/v1/auth/password/",
        {"old_password": PASSWORD, "new_password": "a-new-long-passphrase-42"},
    )
    assert done.status_code == 200
    assert _api(key).get("/api/v1/projects/").status_code == 401
    assert _token_login(user.username, PASSWORD).status_code == 400
    assert _token_login(user.username, "a-new-long-passphrase-42").status_code == 200


def test_password_change_page_keeps_this_session_and_revokes_the_token():
    user = make_user("annotator")
    key = _token_login(user.username, PASSWORD).json()["token"]
    client = Client()
    client.force_login(user)
    assert client.get("/password/").status_code == 200
    response = client.post(
        "/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "another-long-passphrase-7",
            "new_password2": "another-long-passphrase-7",
        },
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200  # still signed in here
    assert _api(key).get("/api/v1/projects/").status_code == 401


def test_password_set_anywhere_and_deactivation_revoke_the_token():
    user = make_user("annotator")
    key = _token_login(user.username, PASSWORD).json()["token"]
    # As the admin or `manage.py changepassword` would.
    person = User.objects.get(pk=user.pk)
    person.set_password("set-by-an-admin-123")
    person.save()
    assert _api(key).get("/api/v1/projects/").status_code == 401

    key = _token_login(user.username, "set-by-an-admin-123").json()["token"]
    person = User.objects.get(pk=user.pk)
    person.is_active = False
    person.save(update_fields=["is_active"])
    assert not Token.objects.filter(key=key).exists()

    # An ordinary save (last_login on sign-in) keeps the token.
    keeper = make_user("annotator")
    key = _token_login(keeper.username, PASSWORD).json()["token"]
    keeper.refresh_from_db()
    keeper.email = "keeper@example.org"
    keeper.save()
    assert _api(key).get("/api/v1/projects/").status_code == 200


def test_the_admin_sign_in_is_throttled_too():
    user = make_user("site_engineer", is_staff=True)
    for attempt in range(LIMIT):
        response = Client().post(
            "/admin/login/",
            {"username": user.username, "password": "wrong"},
            REMOTE_ADDR=f"10.6.0.{attempt}",
        )
        assert response.status_code == 200
    response = Client().post(
        "/admin/login/", {"username": user.username, "password": PASSWORD}, REMOTE_ADDR="10.6.1.1"
    )
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    # Failures there count for the other ways in as well.
    assert _page_login(user.username, PASSWORD, "10.6.1.2").status_code == 429
