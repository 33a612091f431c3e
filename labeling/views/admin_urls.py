# Engineers' pages: users' roles.
urlpatterns: list = []
