import pytest
from django.core.exceptions import ValidationError

from labeling.models import Label
from tests.factories import make_image, make_project, make_user


@pytest.mark.django_db
def test_label_is_append_only():
    project = make_project()
    image = make_image(project)
    user = make_user("annotator")
    label = Label.objects.create(project=project, image=image, annotator=user, value="normal")
    label.value = "disgusting"
    with pytest.raises(ValidationError):
        label.save()
    assert Label.objects.get(pk=label.pk).value == "normal"


@pytest.mark.django_db
def test_split_is_deterministic_and_respects_fraction():
    project = make_project(validation_fraction=0.2)
    splits = [project.split_for_hash(f"{i:064x}") for i in range(2000)]
    assert splits == [project.split_for_hash(f"{i:064x}") for i in range(2000)]
    share = splits.count("validation") / len(splits)
    assert 0.17 < share < 0.23
