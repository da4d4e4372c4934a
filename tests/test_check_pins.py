"""scripts/check_pins.py's logic, offline: reading pins, judging a pip report, building pip's command.

The check itself (pip resolving requirements.txt from PyPI for each Python) needs the network and
runs as ``python scripts/check_pins.py``; nothing here touches the network or runs pip.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import stat
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_pins", ROOT / "scripts" / "check_pins.py")
cp = importlib.util.module_from_spec(_spec)
sys.modules["check_pins"] = cp
_spec.loader.exec_module(cp)

ENV_311 = {"implementation_name": "cpython", "os_name": "posix", "platform_machine": "x86_64",
           "platform_system": "Linux", "python_version": "3.11", "python_full_version": "3.11.7",
           "sys_platform": "linux", "platform_python_implementation": "CPython",
           "implementation_version": "3.11.7", "platform_release": "", "platform_version": ""}
ENV_312 = dict(ENV_311, python_version="3.12", python_full_version="3.12.1", implementation_version="3.12.1")


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path):
    """A requirements.txt with the shapes ours has, a constraints file, and a local project."""
    write(tmp_path / "pyproject.toml", "[project]\nname = 'demo'\n")
    write(tmp_path / "constraints-cuda.txt", "# CUDA\nnvidia-cublas==13.1.1.3\ncuda-toolkit==13.0.3\n")
    write(tmp_path / "more" / "extra.txt", "six==1.17.0  # from a nested -r\n")
    req = write(tmp_path / "requirements.txt", """\
# header comment
-e .
-c constraints-cuda.txt
--index-url https://example.invalid/simple
-r more/extra.txt

torch==2.13.0
triton==3.7.1; platform_system == "Linux" and platform_machine == "x86_64"
Jinja2==3.1.6   # mixed case, canonicalised
typing_extensions==4.16.0
setuptools==84.2.1; python_version >= "3.12"
requests[socks]==2.34.2 \\
    --hash=sha256:0000
loose>=1.0
exactly===7
""")
    return tmp_path, req


def item(name, version, url=None, requires=(), extras=(), dir_info=False):
    info = {"url": url or f"https://files.example/{name}-{version}-py3-none-any.whl"}
    if dir_info:
        info["dir_info"] = {"editable": True}
    else:
        info["archive_info"] = {"hashes": {"sha256": "0"}}
    return {"download_info": info, "is_direct": dir_info, "requested": False,
            "metadata": {"name": name, "version": version, "requires_dist": list(requires),
                         "provides_extra": list(extras)}}


def report(environment, *items):
    return {"version": "1", "pip_version": "26.3", "install": list(items), "environment": environment}


def good_items(root):
    return [
        item("demo", "0.1.0", url=root.as_uri(), dir_info=True),
        item("torch", "2.13.0", requires=["cuda-toolkit[cublas]==13.0.3; platform_system == 'Linux'",
                                          "setuptools>=77", "typing-extensions>=4.10"]),
        item("triton", "3.7.1"),
        item("jinja2", "3.1.6"),
        item("typing-extensions", "4.16.0"),
        item("six", "1.17.0"),
        item("requests", "2.34.2"),
        item("cuda-toolkit", "13.0.3.0", requires=["nvidia-cublas==13.1.1.3.*; extra == 'cublas'"],
             extras=["cublas"]),
        item("nvidia-cublas", "13.1.1.3"),
        item("exactly", "7"),
    ]


# ---------------------------------------------------------------- parsing


def test_parse_reads_pins_markers_constraints_and_nested_files(project):
    root, req = project
    pins = cp.parse_requirements(req)
    assert pins.errors == []
    assert pins.files == [str(req), str(root / "constraints-cuda.txt"), str(root / "more" / "extra.txt")]
    assert pins.local_paths == {str(root.resolve()): f"{req}:2"}
    (torch,) = pins.pins["torch"]
    assert (torch.exact_version, torch.marker, torch.constraint, torch.source) == \
        ("2.13.0", None, False, f"{req}:7")
    (triton,) = pins.pins["triton"]
    assert triton.marker == 'platform_system == "Linux" and platform_machine == "x86_64"'
    assert pins.pins["jinja2"][0].exact_version == "3.1.6"
    assert pins.pins["typing-extensions"][0].exact_version == "4.16.0"
    assert pins.pins["six"][0].source.endswith("extra.txt:1") and not pins.pins["six"][0].constraint
    assert pins.pins["requests"][0].exact_version == "2.34.2"  # continuation and --hash handled
    assert pins.pins["loose"][0].exact_version is None
    assert pins.pins["exactly"][0].exact_version == "7"
    cublas = pins.pins["nvidia-cublas"][0]
    assert cublas.constraint and cublas.exact_version == "13.1.1.3"
    assert "example" not in pins.pins  # --index-url is an option, not a pin


def test_parse_reports_bad_lines_missing_files_and_stops_at_cycles(tmp_path):
    write(tmp_path / "b.txt", "-r a.txt\nok==1\n")
    req = write(tmp_path / "a.txt", "-r b.txt\nthis is not a requirement\n-c missing.txt\n"
                                    "pkg @ https://x/pkg.whl\nhttps://x/other-1.0-py3-none-any.whl\n")
    pins = cp.parse_requirements(req)
    assert [p.exact_version for p in pins.pins["ok"]] == ["1"]
    assert pins.local_paths == {}
    assert len(pins.errors) == 4, pins.errors
    assert any("cannot parse" in e and "a.txt:2" in e for e in pins.errors)
    assert any("missing.txt" in e and "cannot read" in e for e in pins.errors)
    assert any("from a URL" in e for e in pins.errors)
    assert any("a.txt:5: a URL" in e for e in pins.errors)


def test_constraint_flag_is_inherited_by_files_a_constraints_file_includes(tmp_path):
    write(tmp_path / "inner.txt", "x==1\n")
    write(tmp_path / "c.txt", "-r inner.txt\n")
    pins = cp.parse_requirements(write(tmp_path / "r.txt", "--constraint=c.txt\ny==2\n"))
    assert pins.pins["x"][0].constraint and not pins.pins["y"][0].constraint


@pytest.mark.parametrize("specifier, exact", [("==1.2", "1.2"), ("===1.2", "1.2"), ("== 1.2", "1.2"),
                                              ("==1.*", None), (">=1", None), ("", None),
                                              ("==1,<2", None)])
def test_exact_version(specifier, exact):
    assert cp.Pin("p", specifier, None, "f:1", False).exact_version == exact


def test_markers_are_evaluated_against_the_reports_environment():
    pin = cp.Pin("setuptools", "==84.2.1", 'python_version >= "3.12"', "r:1", False)
    assert not pin.applies(ENV_311) and pin.applies(ENV_312)
    assert cp.Pin("p", "==1", None, "r:1", False).applies({})


# ---------------------------------------------------------------- judging a report


def test_a_fully_pinned_report_has_no_problems(project):
    root, req = project
    pins = cp.parse_requirements(req)
    packages, problems = cp.check_report(report(ENV_311, *good_items(root)), pins)
    assert problems == []
    assert len(packages) == 10


def test_unpinned_package_is_reported_with_who_requires_it(project):
    root, req = project
    pins = cp.parse_requirements(req)
    items = good_items(root) + [item("filelock", "4.3.1"), item("nvidia-cudnn-cu13", "9.20.0.48")]
    items[1]["metadata"]["requires_dist"] += ["filelock", "nvidia-cudnn-cu13==9.20.0.48; platform_system == 'Linux'"]
    _, problems = cp.check_report(report(ENV_311, *items), pins)
    assert problems == ["unpinned: filelock==4.3.1 (required by torch)",
                        "unpinned: nvidia-cudnn-cu13==9.20.0.48 (required by torch)"]


def test_required_by_follows_extras_and_ignores_false_markers(project):
    root, _ = project
    items = good_items(root) + [item("winonly", "1", requires=["nvidia-cublas; sys_platform == 'win32'"])]
    packages = cp.resolved_packages(report(ENV_311, *items))
    assert cp._required_by("nvidia-cublas", packages, ENV_311) == ["cuda-toolkit"]


def test_mismatched_pin_is_reported_with_its_line(project):
    root, req = project
    pins = cp.parse_requirements(req)
    items = good_items(root)
    items[2] = item("triton", "3.6.0")
    items[8] = item("nvidia-cublas", "13.2.0.1")
    _, problems = cp.check_report(report(ENV_311, *items), pins)
    assert problems == [f"mismatch: triton resolved to 3.6.0, pinned ==3.7.1 at {req}:8",
                        f"mismatch: nvidia-cublas resolved to 13.2.0.1, pinned ==13.1.1.3 at "
                        f"{root / 'constraints-cuda.txt'}:2 (required by cuda-toolkit)"]


def test_a_pin_whose_marker_is_false_does_not_count(project):
    root, req = project
    pins = cp.parse_requirements(req)
    items = good_items(root) + [item("setuptools", "84.2.1")]
    assert cp.check_report(report(ENV_312, *items), pins)[1] == []
    (problem,) = cp.check_report(report(ENV_311, *items), pins)[1]
    assert problem.startswith("unpinned: setuptools==84.2.1 (required by torch)")
    triton_off = dict(ENV_312, platform_machine="aarch64")
    assert cp.check_report(report(triton_off, *items), pins)[1] == \
        ["unpinned: triton==3.7.1"]


def test_a_loose_requirement_is_not_a_pin(project):
    root, req = project
    pins = cp.parse_requirements(req)
    (problem,) = cp.check_report(report(ENV_311, *good_items(root), item("loose", "1.5")), pins)[1]
    assert problem == f"unpinned: loose==1.5; only >=1.0 at {req}:14"


@pytest.mark.parametrize("resolved", ["2.13.0+cpu", "2.13.0", "2.13.0.0"])
def test_pep440_equality_local_versions_and_zero_padding(project, resolved):
    root, req = project
    pins = cp.parse_requirements(req)
    items = good_items(root)
    items[1]["metadata"]["version"] = resolved
    assert cp.check_report(report(ENV_311, *items), pins)[1] == []


def test_a_pin_with_a_local_version_needs_that_local_version():
    assert cp._same_version("2.13.0+cpu", "2.13.0+cpu")
    assert not cp._same_version("2.13.0+cpu", "2.13.0")
    assert not cp._same_version("2.13.0", "2.13.1")


def test_a_local_project_needs_its_own_line(project, tmp_path):
    root, req = project
    pins = cp.parse_requirements(req)
    other = tmp_path / "elsewhere"
    items = good_items(root) + [item("stray", "0.1", url=other.as_uri(), dir_info=True)]
    (problem,) = cp.check_report(report(ENV_311, *items), pins)[1]
    assert problem.startswith("local project stray 0.1") and "no -e/path line" in problem


def test_unused_constraints(project):
    root, req = project
    pins = cp.parse_requirements(req)
    unused = cp.unused_constraints(pins, {"torch", "nvidia-cublas"})
    assert [p.name for p in unused] == ["cuda-toolkit"]


# ---------------------------------------------------------------- pip's command and environment


def test_pip_command_is_a_readers_pip_on_the_target_interpreter(tmp_path):
    req = tmp_path / "requirements.txt"
    cmd = cp.pip_command("/py/python3.12", req, tmp_path / "r.json", None, True, environ={})
    assert cmd[:3] == [sys.executable, "-m", "pip"]
    assert cmd[3:8] == ["--isolated", "--no-input", "--disable-pip-version-check", "--python", "/py/python3.12"]
    for flag in ("--dry-run", "--ignore-installed", "--report"):
        assert flag in cmd
    assert cmd[-2:] == ["-r", str(req)]
    assert "fast-deps" in cmd
    assert not any(a.startswith(("--find-links", "--extra-index-url", "--constraint", "--index-url",
                                 "--platform", "--python-version")) for a in cmd)
    slow = cp.pip_command("/py/python3.12", req, tmp_path / "r.json", "https://idx/simple", False,
                          environ={"PIP_CERT": "/ca.pem", "PIP_DEFAULT_TIMEOUT": "180",
                                   "PIP_FIND_LINKS": "/opt/wheels"})
    assert "fast-deps" not in slow and slow[slow.index("--index-url") + 1] == "https://idx/simple"
    head = slow[:slow.index("install")]
    assert head[head.index("--cert") + 1] == "/ca.pem" and head[head.index("--timeout") + 1] == "180"
    assert "/opt/wheels" not in slow


def test_pip_failure_lines_start_at_the_explanation():
    output = "Collecting a\nCollecting b\nWARNING: pip is using lazily downloaded wheels (fast-deps)\n" \
             "INFO: pip is looking at multiple versions\nERROR: Cannot install x and y\n\n" \
             "The conflict is caused by:\n    torch 2.13.0 depends on triton==3.7.1\n" \
             "[notice] A new release of pip is available\nERROR: ResolutionImpossible\n"
    assert cp.pip_failure_lines(output) == ["ERROR: Cannot install x and y", "The conflict is caused by:",
                                            "    torch 2.13.0 depends on triton==3.7.1",
                                            "ERROR: ResolutionImpossible"]
    assert cp.pip_failure_lines("a\nb\nc", keep=2) == ["b", "c"]


def test_clean_environment_drops_pip_settings(monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/c.txt")
    env = cp.clean_environment()
    assert "PIP_FIND_LINKS" not in env and "PIP_CONSTRAINT" not in env
    assert env["PIP_CONFIG_FILE"] == os.devnull
    assert env["PATH"] == os.environ["PATH"]


def test_find_interpreter_checks_the_version_and_looks_in_pyenv(tmp_path, monkeypatch):
    def fake_python(path, prints):
        write(path, f"#!/bin/sh\necho {prints}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
        return str(path)
    wrong = fake_python(tmp_path / "bin" / "python3.12", "3.11")   # on PATH, but the wrong version
    good = fake_python(tmp_path / "pyenv" / "versions" / "3.12.10" / "bin" / "python3.12", "3.12")
    fake_python(tmp_path / "pyenv" / "versions" / "3.12.2" / "bin" / "python3.12", "3.12")
    fake_python(tmp_path / "pyenv" / "versions" / "3.12-dev" / "bin" / "python3.12", "3.12")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    assert cp.find_interpreter("3.12") == (good, "3.12")
    path, note = cp.find_interpreter("3.99")
    assert path is None and "python3.99" in note
    assert cp.find_interpreter(wrong) == (wrong, "3.11")


# ---------------------------------------------------------------- main, with pip replaced


@pytest.fixture
def fake_pip(project, monkeypatch):
    """main() with interpreters found and pip's resolution replaced by a report we write."""
    root, req = project
    outcome = {"items": good_items(root), "returncode": 0}
    monkeypatch.setattr(cp, "pip_version", lambda: (26, 3))
    monkeypatch.setattr(cp, "find_interpreter",
                        lambda spec: (None, "tried python9.9") if spec == "9.9" else (f"/py/{spec}", spec))

    def resolve(interpreter, requirements, report_path, index_url, fast_deps=True):
        env = dict(ENV_312, python_version=interpreter.rsplit("/", 1)[1])
        if outcome["returncode"] == 0:
            report_path.write_text(json.dumps(report(env, *outcome["items"])))
        return cp.subprocess.CompletedProcess([], outcome["returncode"], "",
                                              "ERROR: ResolutionImpossible: for help visit ...")
    monkeypatch.setattr(cp, "resolve", resolve)
    return req, outcome


def test_main_passes_when_every_python_resolves_pinned(fake_pip, capsys):
    req, _ = fake_pip
    assert cp.main(["--requirements", str(req), "--python", "3.11", "--python", "3.12"]) == 0
    out = capsys.readouterr().out
    assert "Python 3.11 (/py/3.11), Linux x86_64: resolved 10 packages" in out
    assert "Python 3.12 (/py/3.12)" in out and out.count("all pinned") == 2
    assert out.rstrip().splitlines()[-1].startswith("check_pins: OK")


def test_main_defaults_to_three_pythons(fake_pip, capsys):
    req, _ = fake_pip
    assert cp.main(["--requirements", str(req)]) == 0
    out = capsys.readouterr().out
    assert all(f"Python {v} (" in out for v in ("3.11", "3.12", "3.13"))


def test_main_fails_on_an_unpinned_package(fake_pip, capsys):
    req, outcome = fake_pip
    outcome["items"].append(item("wheel", "0.48.0"))
    assert cp.main(["--requirements", str(req), "--python", "3.13"]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and "unpinned: wheel==0.48.0" in out and "check_pins: FAILED" in out


def test_main_fails_when_pip_cannot_resolve(fake_pip, capsys):
    req, outcome = fake_pip
    outcome["returncode"] = 1
    assert cp.main(["--requirements", str(req), "--python", "3.12"]) == 1
    out = capsys.readouterr().out
    assert "FAILED, pip could not resolve (exit 1" in out and "ResolutionImpossible" in out


def test_main_fails_rather_than_skips_a_missing_interpreter(fake_pip, capsys):
    req, _ = fake_pip
    assert cp.main(["--requirements", str(req), "--python", "3.12", "--python", "9.9"]) == 1
    out = capsys.readouterr().out
    assert "Python 9.9: FAILED, no interpreter found (tried python9.9)" in out
    assert "Python 3.12 (/py/3.12)" in out


def test_main_fails_on_an_unreadable_pin_line(fake_pip, capsys):
    req, _ = fake_pip
    req.write_text(req.read_text() + "not a requirement line\n")
    assert cp.main(["--requirements", str(req), "--python", "3.12"]) == 1
    assert "error:" in capsys.readouterr().out


def test_main_refuses_a_pip_too_old_for_python_and_report(fake_pip, monkeypatch, capsys):
    req, _ = fake_pip
    monkeypatch.setattr(cp, "pip_version", lambda: (22, 2))
    assert cp.main(["--requirements", str(req)]) == 1
    assert "too old" in capsys.readouterr().out


def test_the_repositorys_own_files_parse_cleanly():
    pins = cp.parse_requirements(ROOT / "requirements.txt")
    assert pins.errors == []
    assert pins.local_paths and str(ROOT) in pins.local_paths
    assert pins.pins["torch"][0].exact_version == "2.13.0"
    assert any(p.constraint for ps in pins.pins.values() for p in ps)
    for name, ps in pins.pins.items():
        assert all(p.exact_version for p in ps), f"{name} is not pinned with ==: {ps}"
