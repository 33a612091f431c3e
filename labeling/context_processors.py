from .roles import ROLE_NAMES, ROLE_ORDER, Role, user_role


def roles(request):
    role = user_role(getattr(request, "user", None))
    return {
        "user_role": role.value if role else None,
        "user_role_name": ROLE_NAMES[role] if role else None,
        "is_lead": role is not None and ROLE_ORDER.index(role) >= ROLE_ORDER.index(Role.LEAD),
        "is_engineer": role in (Role.ENGINEER, Role.SITE_ENGINEER),
        "is_site_engineer": role == Role.SITE_ENGINEER,
    }
