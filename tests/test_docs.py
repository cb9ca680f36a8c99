"""The docs: generated tables agree with the files they report on, the site builds strictly and offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import ROOT
from pairtune import doctables


def test_committed_tables_match_the_committed_metrics():
    tables, compared = doctables.check(ROOT)
    assert tables >= 15
    # the tables made only from git-tracked files are always regenerated and compared, clean clone or not
    assert compared >= 5


def _mini_repo(tmp_path: Path) -> Path:
    """A repository of one pipeline output (git-tracked metrics, recorded in dvc.lock) and one doc table."""
    root = tmp_path / "repo"
    (root / "metrics").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "bench").mkdir()
    (root / "bench/tune.json").write_text((ROOT / "bench/tune.json").read_text())
    report = json.loads((ROOT / "metrics/report.json").read_text()) if (ROOT / "metrics/report.json").exists() \
        else _report()
    # the operating-point rows also read metrics/interpolate/*.json, which this one-file repository lacks
    (root / "metrics/report.json").write_text(json.dumps({k: v for k, v in report.items() if not k.startswith("op_")}))
    _lock(root)
    (root / "README.md").write_text("# x\n\n<!-- table: verdict -->\n<!-- /table -->\n\n<!-- table: lr-check -->\n"
                                    "<!-- /table -->\n")
    doctables.update(root)
    return root


def _report() -> dict:
    r = {}
    for a, b in (("full", "base"), ("lora", "base"), ("lora", "full")):
        for stat in ("auc", "spearman"):
            k = f"{a}_vs_{b}_{stat}_diff"
            r.update({k: 0.1, f"{k}_ci_low": 0.0, f"{k}_ci_high": 0.2})
    r["lora_share_of_full_gain_auc"] = 0.9
    return r


def _lock(root: Path) -> None:
    md5 = doctables._md5(root / "metrics/report.json")
    (root / "dvc.lock").write_text(f"schema: '2.0'\nstages:\n  report:\n    cmd: x\n    outs:\n"
                                   f"    - path: metrics/report.json\n      hash: md5\n      md5: {md5}\n")


def test_a_table_not_regenerated_after_a_rerun_is_caught(tmp_path):
    root = _mini_repo(tmp_path)
    assert doctables.check(root) == (2, 2)
    text = (root / "README.md").read_text()
    assert "LoRA - full" in text and "metrics/report.json=" in text
    data = json.loads((root / "metrics/report.json").read_text())
    data["lora_vs_full_auc_diff"] = 0.5
    (root / "metrics/report.json").write_text(json.dumps(data))
    _lock(root)  # a rerun: new metrics, new dvc.lock
    with pytest.raises(doctables.StaleTable, match="report.json is now .*run `make tables`"):
        doctables.check(root)
    # a clean clone has dvc.lock but not the DVC-cached file itself: the recorded hash still catches it
    (root / "metrics/report.json").unlink()
    with pytest.raises(doctables.StaleTable, match="report.json is now"):
        doctables.check(root)


def test_a_hand_edited_table_is_caught(tmp_path):
    root = _mini_repo(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("LoRA - full", "LoRA - full (edited)"))
    with pytest.raises(doctables.StaleTable, match="differs from what its files generate"):
        doctables.check(root)
    readme.write_text(readme.read_text().replace("<!-- table: verdict", "<!-- table: nonesuch"))
    with pytest.raises(doctables.StaleTable, match="no such table"):
        doctables.check(root)
    # a marker the parser does not read (an empty source list) was skipped in silence, its table never filled
    readme.write_text(readme.read_text() + "\n<!-- table: verdict | -->\n<!-- /table -->\n")
    for run in (doctables.check, doctables.update):
        with pytest.raises(doctables.StaleTable, match=r"README.md:\d+: a table marker not read as one"):
            run(root)


def test_update_refuses_sources_that_are_not_the_committed_version(tmp_path):
    root = _mini_repo(tmp_path)
    changed = {**json.loads((root / "metrics/report.json").read_text()), "lora_vs_full_auc_diff": 0.3}
    (root / "metrics/report.json").write_text(json.dumps(changed))  # a rerun not recorded in dvc.lock
    with pytest.raises(doctables.StaleTable, match="not the version dvc.lock records"):
        doctables.update(root)


def _flat(node: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in node.items():
        keys.add(prefix + k)
        if isinstance(v, dict):
            keys |= _flat(v, f"{prefix}{k}.")
    return keys


def test_params_reference_has_every_key_with_its_comment():
    text = (ROOT / "params.yaml").read_text()
    entries = doctables.params_entries(text)
    assert {k for k, _, _ in entries} == _flat(YAML(typ="safe").load(text))
    leaves = [(k, v, c) for k, v, c in entries if v]
    assert all(c for _, _, c in leaves), [k for k, _, c in leaves if not c]  # every value is explained
    # a comment continued on the next line is joined to its key
    assert any("chosen on dev by the tune stage" in c and "2.0e-5" in c for k, _, c in entries if k == "train.full.lr")


def test_report_charts_are_extracted_by_alt_text():
    import base64

    png = b"\x89PNG fake"
    html = (f'<img alt="Learning-rate search (tune stage)" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            '<img alt="something else" src="data:image/png;base64,AAAA">')
    assert doctables.report_images(html) == {"tune.png": png}


def test_docs_build_strict_and_offline(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(ROOT / "mkdocs.yml"), "-d", str(site)], capture_output=True, text=True,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pages = sorted(site.glob("*.html"))
    assert len(pages) >= 12
    for page in pages:
        html = page.read_text()
        # nothing the page loads comes from the network: no fonts, scripts, styles or images over http(s)
        loads = re.findall(r'<(?:script|img|iframe)[^>]*\ssrc="(https?:[^"]+)"|<link[^>]*\shref="(https?:[^"]+)"', html)
        assert not [u for pair in loads for u in pair if u], (page.name, loads)
    assert (site / "img/report.png").is_file()


def test_a_broken_link_fails_the_strict_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs/index.md"
    page.write_text(page.read_text() + "\n[gone](no-such-page.md)\n")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(copy / "mkdocs.yml"), "-d", str(tmp_path / "site")], capture_output=True, text=True,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    # (mkdocs' --quiet hides the warnings --strict counts: with it this build passed)
    assert proc.returncode != 0 and "no-such-page.md" in proc.stderr


def test_readme_links_and_images_resolve():
    """README is read on GitHub and PyPI, outside the docs build: its links into docs/ are checked here."""
    from markdown.extensions.toc import slugify

    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((?!https?:)([^)#]+)(?:#([^)]+))?\)", readme)
    assert len(targets) >= 15
    for rel, anchor in targets:
        path = ROOT / rel
        assert path.exists(), rel
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
            assert anchor in {slugify(h, "-") for h in headings}, (rel, anchor)


def test_every_documented_command_is_run_by_a_test_or_says_why_not():
    """#34: each shell or Python block in README and docs/ carries `<!-- commands: run by TEST -->` (that test
    reads the block with conftest.doc_blocks and runs it) or `<!-- commands: not run: REASON -->`."""
    from conftest import DOC_FENCE, DOC_MARKER, doc_pages

    unmarked, broken = [], []
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        marked = {m.start("lang") - 3 for m in DOC_MARKER.finditer(text)}
        for fence in DOC_FENCE.finditer(text):
            if fence.start() not in marked:
                unmarked.append(f"{page.relative_to(ROOT)}:{text[:fence.start()].count(chr(10)) + 1}")
        for m in DOC_MARKER.finditer(text):
            if m["why"] is not None:
                assert len(m["why"].strip()) > 20, f"{page.name}: a reason, not a shrug: {m['why']!r}"
                continue
            file, _, name = m["test"].partition("::")
            source = (ROOT / file).read_text(encoding="utf-8") if (ROOT / file).is_file() else ""
            body = source.split(f"\ndef {name}(", 1)[1].split("\ndef ", 1)[0] if f"\ndef {name}(" in source else ""
            if f'doc_blocks("{m["test"]}")' not in body:
                broken.append(f"{page.relative_to(ROOT)}: {m['test']} does not read its block with doc_blocks")
    assert unmarked == [], "blocks neither run by a test nor marked 'not run: why': " + ", ".join(unmarked)
    assert broken == []


def test_a_signed_figure_that_rounds_to_zero_reads_plus_zero():
    """docs/results.md showed LoRA+'s upper bound -0.0002 as "-0.000"; the report writes +0.000, so do the tables."""
    assert doctables._signed_ci(-0.0075, -0.0152, -0.0002) == "-0.007 [-0.015, +0.000]"
    assert doctables._signed_ci(0.0123, -0.0004, 0.02, digits=2) == "+0.01 [+0.00, +0.02]"
