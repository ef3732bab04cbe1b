"""Copy what the public pages need of the State design system (DSFR) next to the gateway.

`make install` runs `npm ci` (the exact version pinned in package.json and package-lock.json,
its integrity checked) and then this script, which copies from
node_modules/@gouvfr/dsfr/dist/ only the minified stylesheet and the files it refers to by
url() (the Marianne and Spectral fonts, the icons of the components), so the gateway serves
them itself (nothing loaded from another site, DESIGN.md section 10). The copy is git-ignored:
the lock file is the source, and a version bump is one line, not megabytes of vendored files.

    python3 deploy/dsfr_assets.py [--dist DIR] [--to DIR]
"""
import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "node_modules" / "@gouvfr" / "dsfr"
TARGET = ROOT / "gateway" / "public" / "static" / "dsfr"
STYLESHEET = "dsfr.min.css"
# url(...) in the stylesheet: data: URIs are inline, anything else must be a file of dist/
URL = re.compile(r"""url\(\s*(['"]?)([^'")]+)\1\s*\)""")


def referenced(css):
    """The relative paths the stylesheet loads (fonts, icons), sorted; data: URIs left out.
    A reference to another site is an error: the pages must load nothing from outside."""
    found = set()
    for _, target in URL.findall(css):
        target = target.strip()
        if target.startswith("data:"):
            continue
        if re.match(r"^[a-z][a-z0-9+.-]*:|^//|^/", target, re.I) or ".." in target.split("/"):
            raise ValueError(f"{STYLESHEET} refers to {target!r}, which is not a file of dist/")
        found.add(target.split("?")[0].split("#")[0])
    return sorted(found)


def copy(dist, target):
    """Replace `target` with the stylesheet and what it refers to; the number of files."""
    css = (dist / STYLESHEET).read_text(encoding="utf-8")
    files = [STYLESHEET] + referenced(css)
    missing = [name for name in files if not (dist / name).is_file()]
    if missing:
        raise FileNotFoundError(f"not in {dist}: {', '.join(missing)}")
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    for name in files:
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dist / name, staging / name)
    shutil.copyfile(dist.parent / "LICENSE.md", staging / "LICENSE.md")
    version = json.loads((dist.parent / "package.json").read_text())["version"]
    (staging / "VERSION").write_text(version + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # the gateway never sees half a copy
    return len(files), version


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=PACKAGE / "dist")
    parser.add_argument("--to", type=Path, default=TARGET)
    args = parser.parse_args(argv)
    count, version = copy(args.dist, args.to)
    print(f"DSFR {version}: {count} files in {args.to}")


if __name__ == "__main__":
    sys.exit(main())
