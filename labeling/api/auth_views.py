"""Tokens and passwords over the API (issue 8, item 5).

- `POST auth/token/`: a username and password in, the person's token out (a new key when the
  old one expired). Failed attempts are throttled per account and per address
  (labeling/throttles.py): past the limit, 429 with Retry-After, before any password is hashed.
- `GET auth/tokens/`: the caller's own token, or every token for engineers (never the key).
- `DELETE auth/tokens/<user id>/`: revoke that person's token (the owner or an engineer;
  someone else's is a 404, as if it did not exist); 204 also when there was none.
- `POST auth/password/`: change one's own password (the token is revoked; sign in again).
"""

from __future__ import annotations

from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.models import User
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, parsers, renderers, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.permissions import can_manage_token_of
from labeling.services import tokens
from labeling.throttles import LOGIN_FAILURE_THROTTLES


class TokenOutput(serializers.Serializer):
    user = serializers.IntegerField(source="user_id")
    username = serializers.CharField(source="user.username")
    created = serializers.DateTimeField()
    expires_at = serializers.SerializerMethodField()

    def get_expires_at(self, token) -> str | None:
        expires = tokens.token_expires_at(token.created)
        return serializers.DateTimeField().to_representation(expires) if expires else None


class TokenIssueOutput(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)


class PasswordChangeInput(serializers.Serializer):
    old_password = serializers.CharField(max_length=128, write_only=True)
    new_password = serializers.CharField(max_length=128, write_only=True)


class TokenObtainApi(APIView):
    """Exchange a username and password for the person's API token."""

    authentication_classes = ()
    permission_classes = [AllowAny]
    throttle_classes = LOGIN_FAILURE_THROTTLES
    parser_classes = [parsers.FormParser, parsers.MultiPartParser, parsers.JSONParser]
    renderer_classes = [renderers.JSONRenderer]

    @extend_schema(request=AuthTokenSerializer, responses=TokenIssueOutput)
    def post(self, request):
        data = AuthTokenSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        token = tokens.token_issue(user=data.validated_data["user"])
        expires = tokens.token_expires_at(token.created)
        return Response(TokenIssueOutput({"token": token.key, "expires_at": expires}).data)


class TokenListApi(generics.ListAPIView):
    permission_classes = [IsAuthenticated]
    serializer_class = TokenOutput

    def get_queryset(self):
        return tokens.tokens_visible_to(self.request.user)


class TokenRevokeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        owner = get_object_or_404(User, pk=pk)
        if not can_manage_token_of(request.user, owner):
            raise Http404  # someone else's token is not even said to exist
        tokens.tokens_revoke(user=owner, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PasswordChangeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=PasswordChangeInput,
        responses={200: inline_serializer("PasswordChanged", {"detail": serializers.CharField()})},
    )
    def post(self, request):
        data = PasswordChangeInput(data=request.data)
        data.is_valid(raise_exception=True)
        user: User = request.user
        tokens.user_password_change(user=user, **data.validated_data)
        if isinstance(request.successful_authenticator, SessionAuthentication):
            update_session_auth_hash(request._request, user)  # this session stays signed in
        return Response({"detail": str(_("Password changed. Ask for a new API token."))})
