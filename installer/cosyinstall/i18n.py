"""Speak the user's language at the output boundary: English in the code, Chinese on the screen when asked.

Messages stay English where they are made (and in the install log). What reaches the terminal
is translated here, line by line, through a catalogue keyed by the English templates
(cosyinstall.catalogue_zh.ZH): an exact entry first, then each template as a pattern whose
%-placeholders match any text, the matched pieces translated in turn (a path stays a path, an
embedded message is translated too). A line no entry matches is printed as it is.

Chinese is chosen with --lang zh, or when LC_ALL, LC_MESSAGES or LANG (in that order, as POSIX
does) starts with "zh"; --lang en forces English.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional, Pattern, Sequence, TextIO, Tuple, cast

__all__ = ["wants_chinese", "Translator", "TranslatingStream", "install", "translate_parser", "SPEC"]

# A printf placeholder as the messages use them: %s %d %r %o %.1f %-8s %3.0f, and %(name)s in help.
SPEC = re.compile(r"%(?:\([a-z_]+\))?[-#0 +]*\d*(?:\.\d+)?[sdrfoxg]")
_CONTROL = re.compile(r"^[\r\x1b\[K]*")
# A check name may hold single spaces ("gpu need"); the table puts two or more after it.
_ROW = re.compile(r"^(ok|FAIL|warn)(\s+)(\S+(?: \S+)*)(\s{2,})(.*)$")
_LABELLED = re.compile(r"^([a-z]+)(\s{2,})(.*)$")
# Templates that frame a whole sentence ("cosyinstall: error: %s"): their placeholder may hold "; ".
_FRAMES = ("cosyinstall: ", "cosybuild: ", "WARNING: ")


def wants_chinese(argv: Sequence[str], environ: Optional[Mapping[str, str]] = None) -> bool:
    """--lang zh|en decides; otherwise the first set of LC_ALL, LC_MESSAGES, LANG."""
    for i, arg in enumerate(argv):
        if arg.startswith("--lang="):
            return arg.split("=", 1)[1].lower().startswith("zh")
        if arg == "--lang" and i + 1 < len(argv):
            return argv[i + 1].lower().startswith("zh")
    env = os.environ if environ is None else environ
    for key in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(key, "")
        if value:
            return value.lower().startswith("zh")
    return False


def _pattern(template: str) -> Pattern[str]:
    parts = []
    last = 0
    for match in SPEC.finditer(template):
        parts.append(re.escape(template[last:match.start()].replace("%%", "%")))
        kind = match.group(0)[-1]
        parts.append(r"(-?\d+)" if kind in "dox" else r"(-?[\d.]+)" if kind in "fg" else "(.*?)")
        last = match.end()
    parts.append(re.escape(template[last:].replace("%%", "%")))
    return re.compile("^" + "".join(parts) + "$", re.S)


def _fill(chinese: str, pieces: List[str]) -> str:
    """Put the (translated) pieces into the Chinese template's placeholders, in order."""
    out = []
    last = 0
    for i, match in enumerate(SPEC.finditer(chinese)):
        out.append(chinese[last:match.start()].replace("%%", "%"))
        # %.0s takes a piece and shows nothing (an English plural "s", say).
        out.append("" if match.group(0) == "%.0s" or i >= len(pieces) else pieces[i])
        last = match.end()
    out.append(chinese[last:].replace("%%", "%"))
    return "".join(out)


class Translator:
    """English text -> the catalogue's Chinese, by exact entry or by template pattern."""

    def __init__(self, catalogues: Iterable[Mapping[str, str]]) -> None:
        self.exact: Dict[str, str] = {}
        for catalogue in catalogues:
            self.exact.update(catalogue)
        # A template of placeholders, spaces and "; " alone ("%s %s", "%s; %s") would split any sentence
        # at a space or pair any two parts, translating words that happen to be entries ("server" -> 服务)
        # or hiding a part's own entry: it is an exact entry only; _pieces splits at "; " itself.
        patterned = [(t, c) for t, c in self.exact.items() if SPEC.search(t) and SPEC.sub("", t).strip(" ;")]
        # The most specific template (most literal text) wins over looser ones such as "%s: %s".
        patterned.sort(key=lambda tc: -len(SPEC.sub("", tc[0])))
        self.patterns: List[Tuple[Pattern[str], str, bool]] = [(_pattern(t), c, t.startswith(_FRAMES)) for t, c in patterned]

    def text(self, english: str, depth: int = 0, split: bool = True) -> str:
        """`split`: may fall back to translating the sentence's parts (off for a run of parts, see _pieces)."""
        if not english or depth > 8:
            return english
        found = self.exact.get(english)
        if found is not None:
            return found
        # A placeholder never spans two sentences ("message; hint"): such a match is a wrong split.
        for pattern, chinese, frame in self.patterns:
            match = pattern.match(english)
            if match and (frame or not any("; " in g for g in match.groups())):
                done = _fill(chinese, [self.text(g, depth + 1) for g in match.groups()])
                if done != english:
                    return done
        return self._pieces(english, depth) if split else english

    def _pieces(self, english: str, depth: int) -> str:
        """A sentence ("message; hint.") whose whole form has no entry: its parts may have."""
        if english.endswith(".") and not english.endswith(".."):
            inner = english[:-1]
            done = self.text(inner, depth + 1)
            if done != inner:
                return done + "。"
        if "; " in english:
            # The longest run of parts an entry knows wins: a message may hold "; " itself.
            parts = english.split("; ")
            done_parts: List[str] = []
            i = 0
            while i < len(parts):
                for j in range(len(parts), i, -1):
                    chunk = "; ".join(parts[i:j])
                    # A run of several parts counts only when an entry knows the run as a whole: split
                    # again, it would be taken half-translated before its parts were tried one by one.
                    done = self.text(chunk, depth + 1, j - i == 1) if j - i < len(parts) else chunk
                    if done != chunk or j == i + 1:
                        done_parts.append(done)
                        i = j
                        break
            if done_parts != parts:
                return "；".join(done_parts)
        return english

    def line(self, english: str) -> str:
        """One printed line: leading control codes and indentation kept, table rows by column."""
        head = _CONTROL.match(english)
        prefix = head.group(0) if head else ""
        body = english[len(prefix):]
        indent = body[:len(body) - len(body.lstrip(" "))]
        body = body[len(indent):]
        if not body:
            return english
        row = _ROW.match(body)
        done = body if row is not None else self.text(body)
        if done == body:
            row = row or _LABELLED.match(body)
            if row is not None:
                pieces = list(row.groups())
                for i in range(0, len(pieces), 2):
                    pieces[i] = self.text(pieces[i])
                done = "".join(pieces)
        return prefix + indent + done


class TranslatingStream:
    """A text stream that translates every line written to it; everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO, translator: Translator) -> None:
        self._stream = stream
        self._translator = translator

    def write(self, text: str) -> int:
        done = "\n".join(self._translator.line(piece) for piece in text.split("\n"))
        self._stream.write(done)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _utf8(stream: TextIO) -> TextIO:
    """A missing zh_CN locale leaves Python with an ASCII stream; Chinese needs UTF-8 bytes."""
    encoding = (getattr(stream, "encoding", "") or "").lower().replace("-", "")
    if encoding != "utf8" and hasattr(stream, "reconfigure"):
        try:
            stream.reconfigure(encoding="utf-8")
        except (ValueError, OSError):
            pass
    return stream


def install(catalogues: Iterable[Mapping[str, str]], argparse_zh: Mapping[str, str]) -> Translator:
    """Translate everything printed from now on (stdout, stderr, argparse's own words)."""
    translator = Translator(catalogues)
    sys.stdout = cast(TextIO, TranslatingStream(_utf8(sys.stdout), translator))
    sys.stderr = cast(TextIO, TranslatingStream(_utf8(sys.stderr), translator))
    vars(argparse)["_"] = lambda text: argparse_zh.get(text, text)
    return translator


def translate_parser(parser: argparse.ArgumentParser, translator: Translator) -> None:
    """Help texts and descriptions, of the parser and of every subcommand, in the chosen language."""
    def help_text(text: str) -> str:
        # Texts still holding %(default)s are templates themselves: exact entries only.
        return translator.exact.get(text, text) if "%(" in text else translator.text(text)

    if parser.description:
        parser.description = help_text(parser.description)
    for action in parser._actions:
        if action.help and action.help != argparse.SUPPRESS:
            action.help = help_text(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.help:
                    choice.help = help_text(choice.help)
            seen = set()
            for sub in action.choices.values():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    translate_parser(sub, translator)
