"""deploy/dsfr_assets.py: only the stylesheet and what it refers to are copied, nothing from
another site is accepted, and a missing file stops the install (issue 21)."""
import json

import pytest

from deploy import dsfr_assets


def package(tmp_path, css, files=()):
    """A package folder like node_modules/@gouvfr/dsfr: dist/ with `css` and `files`."""
    root = tmp_path / "dsfr"
    dist = root / "dist"
    (dist / "fonts").mkdir(parents=True)
    (dist / "dsfr.min.css").write_text(css)
    (dist / "unused.js").write_text("never copied")
    for name in files:
        (dist / name).parent.mkdir(parents=True, exist_ok=True)
        (dist / name).write_bytes(b"x")
    (root / "package.json").write_text(json.dumps({"version": "9.9.9"}))
    (root / "LICENSE.md").write_text("licence")
    return dist


def test_the_stylesheet_and_what_it_refers_to_are_copied_and_nothing_else(tmp_path):
    css = ('@font-face{src:url(fonts/M.woff2) format("woff2"),url("fonts/M.woff")}'
           ".a::before{mask-image:url('icons/system/x.svg')}"
           '.b{background:url("data:image/svg+xml;charset=utf8,<svg xmlns=\'http://www.w3.org/2000/svg\'/>")}')
    dist = package(tmp_path, css, ["fonts/M.woff2", "fonts/M.woff", "icons/system/x.svg",
                                   "icons/system/unused.svg"])
    target = tmp_path / "static" / "dsfr"
    target.mkdir(parents=True)
    (target / "stale.css").write_text("from an older version")
    count, version = dsfr_assets.copy(dist, target)
    copied = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert copied == ["LICENSE.md", "VERSION", "dsfr.min.css", "fonts/M.woff", "fonts/M.woff2",
                      "icons/system/x.svg"]
    assert (count, version) == (4, "9.9.9")
    assert not (tmp_path / "static" / "dsfr.new").exists()


@pytest.mark.parametrize("url", ["https://cdn.example/m.woff2", "//cdn.example/m.woff2",
                                 "/elsewhere/m.woff2", "../../etc/passwd"])
def test_a_reference_outside_the_package_is_refused(tmp_path, url):
    dist = package(tmp_path, f"@font-face{{src:url({url})}}")
    with pytest.raises(ValueError, match="not a file of dist"):
        dsfr_assets.copy(dist, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_file_stops_the_install(tmp_path):
    dist = package(tmp_path, ".a{mask-image:url(icons/gone.svg)}")
    with pytest.raises(FileNotFoundError, match="icons/gone.svg"):
        dsfr_assets.copy(dist, tmp_path / "out")
