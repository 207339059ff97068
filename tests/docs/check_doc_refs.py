#!/usr/bin/env python3
"""Every citation of a doc section resolves.

Code, protos and docs cite sections as  doc/<file>.md, "Section"  or
doc/<file>.md ("Section"), often across comment lines: a heading, or a
paragraph's bold label (**Section.** ...). Clients in other
languages are written from the protos and doc/ alone, so a citation of a
section that does not exist (renamed, or never written) is a defect.
Exit 1 naming each citation whose file or section is missing.

  check_doc_refs.py --source ROOT
"""
import argparse
import os
import re
import sys

SCAN_DIRS = ("proto", "server", "shm", "client", "tests", "doc")
SCAN_FILES = ("README.md", "BENCHMARKS.md")
SUFFIXES = (".h", ".cc", ".proto", ".py", ".md")
CITATION = re.compile(r'(doc/[\w./-]+\.md)(?:,\s*|\s*\(\s*)"([^"]+)"')
COMMENT_PREFIX = re.compile(r"^\s*(//+|#+(?=\s)|\*)\s?")


def sources(root):
    for name in SCAN_FILES:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            yield path
    for top in SCAN_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in sorted(filenames):
                if f.endswith(SUFFIXES):
                    yield os.path.join(dirpath, f)


def joined(text):
    """The text with comment markers removed and line breaks as spaces,
    so that a citation broken across comment lines reads as one; and, for
    each character of it, the line it came from."""
    out, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        line = COMMENT_PREFIX.sub("", line) + " "
        out.append(line)
        lines.extend([number] * len(line))
    return "".join(out), lines


def headings(path, cache):
    if path not in cache:
        try:
            with open(path, encoding="utf-8") as f:
                anchors = []
                for line in f:
                    if line.startswith("#"):
                        anchors.append(line.lstrip("#").strip())
                    elif line.startswith("**"):
                        anchors.append(line[2:].split("**", 1)[0])
                cache[path] = anchors
        except OSError:
            cache[path] = None
    return cache[path]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="the project root")
    args = parser.parse_args()
    cache, checked, missing = {}, 0, []
    for path in sources(args.source):
        with open(path, encoding="utf-8", errors="replace") as f:
            text, line_of = joined(f.read())
        for m in CITATION.finditer(text):
            doc, section = m.group(1), " ".join(m.group(2).split())
            found = headings(os.path.join(args.source, doc), cache)
            checked += 1
            where = f"{os.path.relpath(path, args.source)}:{line_of[m.start()]}"
            if found is None:
                missing.append(f'{where}: cites {doc}, which does not exist')
            elif not any(section in h for h in found):
                missing.append(f'{where}: cites {doc}, "{section}": no heading or bold '
                               f'paragraph label says that (write the section, or cite the '
                               f'one that says it)')
    for m in missing:
        print(m)
    print(f"{checked} citations of doc sections checked, {len(missing)} unresolved")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
