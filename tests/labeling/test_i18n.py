"""Every user-facing string has a Simplified Chinese translation, and no template text escapes
the translate tags.

- The catalogs: `makemessages` runs over the project's sources (as a translator would) into a
  temporary locale folder seeded with the committed `locale/zh_Hans` catalogs, so it merges what
  the code says today into what has been translated. Any msgid without a non-empty, non-fuzzy
  msgstr fails, naming the string and where it is. A new `gettext()` / `{% translate %}` added
  anywhere therefore fails here until its translation is added.
- The compiled catalogs: the committed `.mo` files are what `msgfmt` makes of the `.po` files
  (the app reads the `.mo`; a forgotten `compilemessages` would ship stale translations).
- The Python side: error messages (ValidationError, PermissionDenied, Http404, DRF's NotFound
  and ParseError) and `messages.*` texts written as bare literals or f-strings, outside gettext,
  fail (an f-string cannot be translated at all: use named %-placeholders).
- The templates: a scan of text nodes and user-facing attributes (title, alt, placeholder,
  aria-label) outside translate tags; any English word there fails. Text inside <kbd> (key
  caps, printed on the keyboard) and <code> (commands) is literal, and a few names are the same
  in every language (ALLOWED).

Needs GNU gettext (xgettext, msgmerge, msgattrib, msgfmt), as `makemessages` does; scripts/test
and .ci/run install Debian's `gettext` when it is missing.
"""

from __future__ import annotations

import ast
import gettext as gnu_gettext
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from django.template.base import Lexer, TokenType

REPO = Path(__file__).resolve().parents[2]
LOCALE = REPO / "locale"
# Every catalog under locale/ is checked (zh_Hans today); English is the source language.
LANGUAGES = sorted(p.name for p in LOCALE.iterdir() if (p / "LC_MESSAGES").is_dir())
DOMAINS = ("django", "djangojs")
CATALOGS = [(language, domain) for language in LANGUAGES for domain in DOMAINS]
# What makemessages reads: the project's own code, templates and page scripts.
SOURCES = ("config", "labeling", "templates", "static")

# Names that read the same in every language of the UI: the product, and method names that stay
# in Latin letters in Chinese technical writing too.
ALLOWED = {"imageclean", "AP", "CBAM", "Grad-CAM", "O2U"}
USER_FACING_ATTRIBUTES = ("title", "alt", "placeholder", "aria-label")


@pytest.fixture(scope="module")
def merged_catalogs(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """The committed catalogs merged with the strings the sources hold now."""
    root = tmp_path_factory.mktemp("messages")
    for name in (*SOURCES, "manage.py"):
        (root / name).symlink_to(REPO / name)
    for language in LANGUAGES:
        target = root / "locale" / language / "LC_MESSAGES"
        target.mkdir(parents=True)
        for domain in DOMAINS:
            shutil.copy(LOCALE / language / "LC_MESSAGES" / f"{domain}.po", target)
    from django.conf import settings

    old_paths, old_cwd = settings.LOCALE_PATHS, Path.cwd()
    settings.LOCALE_PATHS = [root / "locale"]
    try:
        os.chdir(root)
        for domain in DOMAINS:
            call_command(
                "makemessages",
                locale=LANGUAGES,
                domain=domain,
                symlinks=True,  # the sources are symlinked into the temporary folder
                no_obsolete=True,
                verbosity=0,
            )
    finally:
        os.chdir(old_cwd)
        settings.LOCALE_PATHS = old_paths
    return {
        (language, domain): root / "locale" / language / "LC_MESSAGES" / f"{domain}.po"
        for language, domain in CATALOGS
    }


def _msgattrib(path: Path, *flags: str) -> str:
    out = subprocess.run(
        ["msgattrib", "--no-obsolete", "--no-wrap", *flags, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # The header entry (msgid "") is not a message.
    return re.sub(r'(?s)\A(#[^\n]*\n)*msgid ""\nmsgstr ""\n("[^\n]*"\n)*', "", out).strip()


def test_every_language_of_the_switcher_has_catalogs():
    from django.conf import settings
    from django.utils.translation import to_locale

    wanted = {to_locale(code) for code, _name in settings.LANGUAGES if code != "en"}
    assert wanted == set(LANGUAGES)
    assert "zh_Hans" in LANGUAGES


@pytest.mark.parametrize(("language", "domain"), CATALOGS)
def test_every_message_is_translated(merged_catalogs, language, domain):
    path = merged_catalogs[(language, domain)]
    assert "msgid" in path.read_text(encoding="utf-8")
    untranslated = _msgattrib(path, "--untranslated")
    assert not untranslated, (
        f"strings with no {language} translation: add them to locale/{language}/LC_MESSAGES/"
        f"{domain}.po (see docs/i18n.md)\n{untranslated}"
    )
    fuzzy = _msgattrib(path, "--only-fuzzy")
    assert not fuzzy, f"fuzzy (unchecked) translations in {domain}.po:\n{fuzzy}"


@pytest.mark.parametrize(("language", "domain"), CATALOGS)
def test_compiled_catalogs_match_the_po_files(tmp_path, language, domain):
    folder = LOCALE / language / "LC_MESSAGES"
    fresh = tmp_path / f"{domain}.mo"
    subprocess.run(
        ["msgfmt", "--check", "-o", str(fresh), str(folder / f"{domain}.po")], check=True
    )
    with (folder / f"{domain}.mo").open("rb") as committed, fresh.open("rb") as made:
        committed_catalog = gnu_gettext.GNUTranslations(committed)._catalog
        fresh_catalog = gnu_gettext.GNUTranslations(made)._catalog
    assert committed_catalog == fresh_catalog, (
        f"locale/{language}/LC_MESSAGES/{domain}.mo is stale: run "
        "`manage.py compilemessages -i .venv -i var` and commit the .mo files"
    )


@pytest.mark.django_db
def test_the_page_scripts_catalog_follows_the_page_language_and_is_kept(client):
    """Pages link the catalog with their language and the catalogs' version in the URL, so
    the browser may keep it a week: a switch of language or new translations change the URL."""
    page = client.get("/login/", HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    src = re.search(r'<script src="([^"]*jsi18n[^"]*)"', page).group(1).replace("&amp;", "&")
    assert "l=zh-hans" in src and "v=" in src
    catalog = client.get(src, HTTP_ACCEPT_LANGUAGE="zh-CN")
    assert json.dumps("已保存")[1:-1] in catalog.content.decode()  # "Saved"
    assert "max-age=604800" in catalog["Cache-Control"]
    assert "private" in catalog["Cache-Control"]
    english = client.get("/login/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "l=en" in english and "l=zh-hans" not in english


# --- Bare text in templates ---------------------------------------------------------------------
_OPENING = re.compile(r"^(blocktrans|blocktranslate)\b")
_CLOSING = re.compile(r"^(endblocktrans|endblocktranslate)\b")
_LITERAL_ELEMENTS = re.compile(r"(?is)<(script|style|kbd|code)\b[^>]*>.*?</\1\s*>")
_PLACEHOLDER = "\x00"


def _skeleton(source: str) -> str:
    """The template's HTML with every template tag, variable and comment replaced by a
    placeholder, and blocktranslate bodies (already translatable) dropped."""
    parts: list[str] = []
    depth = 0
    in_comment = False
    in_class_block = False  # {% block body_class %}labeling{% endblock %}: a CSS class name
    for token in Lexer(source).tokenize():
        if token.token_type == TokenType.BLOCK:
            content = token.contents.strip()
            if content.startswith("comment"):
                in_comment = True
            elif content.startswith("endcomment"):
                in_comment = False
            elif re.match(r"block \w+_class$", content):
                in_class_block = True
            # "endblocktranslate" starts with "endblock" too: it closes a translation, not a
            # block, and must reach the depth count below (else nothing after it is scanned).
            elif content.startswith("endblock") and not _CLOSING.match(content):
                in_class_block = False
            elif _OPENING.match(content):
                depth += 1
            elif _CLOSING.match(content):
                depth -= 1
            parts.append(_PLACEHOLDER)
        elif token.token_type == TokenType.TEXT and not (depth or in_comment or in_class_block):
            parts.append(token.contents)
        else:
            parts.append(_PLACEHOLDER)
    return "".join(parts)


def _bare_texts(source: str) -> list[str]:
    html = _LITERAL_ELEMENTS.sub(_PLACEHOLDER, _skeleton(source))
    html = re.sub(r"(?s)<!--.*?-->", _PLACEHOLDER, html)
    found: list[str] = []
    for attribute in USER_FACING_ATTRIBUTES:
        for match in re.finditer(rf'(?i)\s{attribute}\s*=\s*"([^"]*)"', html):
            found.append(match.group(1))
    found.extend(re.split(r"<[^>]*>", html))
    bare = []
    for text in found:
        text = re.sub(r"&[a-zA-Z]+;|&#\d+;", " ", text).replace(_PLACEHOLDER, " ")
        words = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]*[A-Za-z]", text) if w not in ALLOWED]
        if words:
            bare.append(" ".join(text.split()))
    return bare


def _templates() -> list[Path]:
    return sorted(
        p
        for folder in (REPO / "templates", REPO / "labeling" / "templates")
        if folder.is_dir()
        for p in folder.rglob("*.html")
    )


def test_the_scan_finds_bare_text():
    assert _bare_texts("<p>Hello {{ name }}</p>") == ["Hello"]
    assert _bare_texts('<img alt="A cat" src="{{ url }}">') == ["A cat"]
    assert _bare_texts("{% load i18n %}<p>{% translate 'Hello' %}</p>") == []
    assert _bare_texts("<p>{% blocktranslate %}Hi {{ x }}{% endblocktranslate %}</p>") == []
    # Text after a translated block is still scanned.
    assert _bare_texts("{% blocktranslate %}Hi{% endblocktranslate %}<p>Bye</p>") == ["Bye"]
    assert _bare_texts("<kbd>Ctrl</kbd> <code>manage.py</code> imageclean") == []
    assert _bare_texts("{# a comment #}{% comment %}Notes{% endcomment %}") == []
    assert _bare_texts("<style>.a { color: red }</style>") == []
    assert _bare_texts("{% block body_class %}labeling{% endblock %}") == []


@pytest.mark.parametrize("template", _templates(), ids=lambda p: str(p.relative_to(REPO)))
def test_templates_have_no_text_outside_translate_tags(template):
    bare = _bare_texts(template.read_text(encoding="utf-8"))
    assert not bare, (
        f"{template.relative_to(REPO)}: text outside {{% translate %}} / "
        f"{{% blocktranslate %}}: {bare}"
    )


# --- Bare text in Python messages ----------------------------------------------------------------
_ERRORS = {"ValidationError", "PermissionDenied", "Http404", "NotFound", "ParseError"}
_MESSAGE_LEVELS = {"debug", "info", "success", "warning", "error"}


def _untranslated(node: ast.AST) -> list[ast.AST]:
    """String literals with words, and f-strings, in an exception or message argument (also
    inside a dict's values or a list); a gettext call around them is not descended into."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        words = re.findall(r"[A-Za-z]+", node.value)
        return [node] if len(words) >= 2 and any(len(w) > 1 for w in words) else []
    if isinstance(node, ast.JoinedStr):
        return [node]
    if isinstance(node, ast.Dict):
        return [bad for value in node.values for bad in _untranslated(value)]
    if isinstance(node, ast.List | ast.Tuple):
        return [bad for element in node.elts for bad in _untranslated(element)]
    if isinstance(node, ast.BinOp):  # "text" % {...} or "a" + b
        return _untranslated(node.left) + _untranslated(node.right)
    return []


def _python_bare_messages(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _ERRORS:
            arguments = node.args[:1]
        elif (
            name in _MESSAGE_LEVELS
            and isinstance(func, ast.Attribute)
            and getattr(func.value, "id", "") == "messages"
        ):
            arguments = node.args[1:2]
        else:
            continue
        for argument in arguments:
            found += [(bad.lineno, ast.unparse(bad)) for bad in _untranslated(argument)]
    return found


def test_the_python_scan_finds_bare_messages():
    assert _python_bare_messages('raise ValidationError("Not a lease.")') == [(1, "'Not a lease.'")]
    assert len(_python_bare_messages('raise PermissionDenied(f"No {x} here.")')) == 1
    assert len(_python_bare_messages('raise ValidationError({"count": "At most ten."})')) == 1
    assert len(_python_bare_messages('messages.error(request, f"{user}: bad input")')) == 1
    assert _python_bare_messages('raise ValidationError(_("Not a lease."))') == []
    assert _python_bare_messages('raise ValidationError(_("At %(n)s.") % {"n": 1})') == []
    assert _python_bare_messages('raise ValueError("internal, never shown")') == []


def _python_sources() -> list[Path]:
    skip = {"migrations", "management"}  # migrations; command-line output for engineers
    return sorted(
        p
        for folder in (REPO / "labeling", REPO / "config")
        for p in folder.rglob("*.py")
        if not skip & set(p.relative_to(REPO).parts)
    )


def test_python_messages_go_through_gettext():
    bare = [
        f"{path.relative_to(REPO)}:{line}: {text}"
        for path in _python_sources()
        for line, text in _python_bare_messages(path.read_text(encoding="utf-8"))
    ]
    assert not bare, (
        "user-facing messages outside gettext (wrap them in _() with named %-placeholders, "
        "see docs/i18n.md):\n" + "\n".join(bare)
    )
