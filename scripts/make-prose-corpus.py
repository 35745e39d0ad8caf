#!/usr/bin/env python3
"""Builds an English text corpus that ships offline: the prose paragraphs of Python 3.11's
documentation (Debian's `python3.11-doc`, the reST sources under html/_sources), cut into
records of about --words words, as two JSONL files of {"text": ..., "id": ...}: every
--eval-every-th record goes to EVAL (held out, for spliced-in CE), the others to TRAIN (for
`lantern capture`). Issue 14 §4 (BENCHMARKS.md, "Real activations against sparsify").

Kept: every block of text, prose paragraphs joined into one line and literal blocks (code
examples) line by line; inline roles lose their markup (:func:`len` → len, ``x`` → x).
Dropped: markup-only lines (directives, comments, labels, heading rules, table borders).

    apt-get download python3.11-doc      # Debian 12; any mirror holds it
    python3 scripts/make-prose-corpus.py python3.11-doc_*.deb train.jsonl eval.jsonl
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile

ROLE = re.compile(r":[a-z:]+:`!?~?([^`<]*?)(?:\s*<[^>]*>)?`")
LITERAL = re.compile(r"``([^`]*)``")
LINK = re.compile(r"`([^`<]*?)\s*<[^>]*>`_+")
EMPH = re.compile(r"\*\*?([^*\s][^*]*)\*\*?")
# Markup-only lines: directives, comments and labels (and their indented option lines),
# heading over/underlines, table borders.
DIRECTIVE = re.compile(r"^\s*\.\.(\s|$)")
OPTION = re.compile(r"^\s+:[a-zA-Z-]+:")
RULE = re.compile(r"^\s*([=\-~^\"'*#+`]{3,}|\+[-=+]+\+)\s*$")


CODE_DIRECTIVE = re.compile(r"^\s*\.\. (code-block|sourcecode|code|doctest|testcode|testoutput|productionlist)::")


def blocks(text):
    """The text blocks of one reST file: prose paragraphs (joined into one line, inline
    markup stripped) and literal blocks (code examples, dedented, line by line)."""
    out, cur = [], []
    in_directive = literal_next = False

    def flush():
        nonlocal literal_next
        if not cur:
            return
        indent = min(len(l) - len(l.lstrip()) for l in cur)
        lines = [l[indent:] for l in cur]
        cur.clear()
        code = (
            literal_next
            or lines[0].startswith(">>>")
            or any(l[:1].isspace() for l in lines[1:])
        )
        if code:
            b = "\n".join(lines)
        else:
            b = " ".join(l.strip() for l in lines)
            for rx in (ROLE, LINK, LITERAL, EMPH):
                b = rx.sub(r"\1", b)
        literal_next = not code and b.endswith("::")
        b = re.sub(r"::$", ":", b).strip()
        if b:
            out.append(b)

    for line in text.split("\n"):
        if DIRECTIVE.match(line):
            flush()
            in_directive = True
            literal_next = bool(CODE_DIRECTIVE.match(line))
            continue
        if in_directive and OPTION.match(line):
            continue
        in_directive = False
        if RULE.match(line) or not line.strip():
            flush()
            continue
        cur.append(line.rstrip())
    flush()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("deb", help="python3.11-doc_*.deb")
    ap.add_argument("train")
    ap.add_argument("eval")
    ap.add_argument("--words", type=int, default=150, help="words per record (at least; blocks stay whole)")
    ap.add_argument("--eval-every", type=int, default=40)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", a.deb, tmp], check=True)
        sources = sorted(pathlib.Path(tmp).glob("usr/share/doc/python3.11/html/_sources/**/*.rst.txt"))
        if not sources:
            sys.exit(f"{a.deb}: no html/_sources/**/*.rst.txt inside (is it python3.11-doc?)")
        records, words = [], []
        for path in sources:
            for p in blocks(path.read_text(encoding="utf-8", errors="replace")):
                words.append(p)
                if sum(len(w.split()) for w in words) >= a.words:
                    records.append("\n\n".join(words))
                    words = []
        if words:
            records.append("\n\n".join(words))
    n_train = n_eval = 0
    with open(a.train, "w") as ft, open(a.eval, "w") as fe:
        for i, text in enumerate(records):
            line = json.dumps({"text": text, "id": f"pydoc-{i}"}) + "\n"
            if i % a.eval_every == a.eval_every - 1:
                fe.write(line)
                n_eval += 1
            else:
                ft.write(line)
                n_train += 1
    total = sum(len(r.split()) for r in records)
    print(f"{len(sources)} files, {total} words: {n_train} records in {a.train}, {n_eval} in {a.eval}")


if __name__ == "__main__":
    main()
