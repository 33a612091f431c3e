# Engineers' pages: users' roles and project membership.
from django.urls import path

from . import users

urlpatterns = [
    path("users/", users.users_page, name="users"),
    path("users/create/", users.user_add, name="user-create"),
    path("users/<int:pk>/role/", users.user_role_update, name="user-role-update"),
    path("users/<int:pk>/projects/", users.user_projects_update, name="user-projects-update"),
]
