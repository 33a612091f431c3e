from .roles import ROLE_NAMES, Role, user_role


def roles(request):
    role = user_role(getattr(request, "user", None))
    return {
        "user_role": role.value if role else None,
        "user_role_name": ROLE_NAMES[role] if role else None,
        "is_lead": role in (Role.LEAD, Role.ENGINEER),
        "is_engineer": role == Role.ENGINEER,
    }
