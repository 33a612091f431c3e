"""Least privilege (issue 8, item 7): an engineer is now an engineer of the projects they are
members of, and the site-wide engineer is a role of its own (labeling.roles.Role.SITE_ENGINEER).

Every engineer that exists when this runs becomes a site-wide engineer, so nobody loses access
to a project they could open before; narrowing someone down is an explicit decision on the users
page afterwards. Reversing moves site-wide engineers back into the engineer group."""

from django.db import migrations


def split_engineers(apps, schema_editor):
    group_model = apps.get_model("auth", "Group")
    site, _created = group_model.objects.get_or_create(name="site_engineer")
    engineer, _created = group_model.objects.get_or_create(name="engineer")
    for user in engineer.user_set.all():
        user.groups.add(site)
        user.groups.remove(engineer)


def merge_engineers(apps, schema_editor):
    group_model = apps.get_model("auth", "Group")
    site = group_model.objects.filter(name="site_engineer").first()
    if site is None:
        return
    engineer, _created = group_model.objects.get_or_create(name="engineer")
    for user in site.user_set.all():
        user.groups.add(engineer)
    site.delete()


class Migration(migrations.Migration):
    dependencies = [("labeling", "0005_preferences")]

    operations = [migrations.RunPython(split_engineers, merge_engineers)]
