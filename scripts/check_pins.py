"""Check that requirements.txt resolves from PyPI alone, as a reader's pip sees it, with every package pinned.

For each Python version (3.11, 3.12 and 3.13 unless ``--python`` says otherwise) this runs

    pip --isolated --python <that interpreter> install --dry-run --ignore-installed -r requirements.txt --report ...

with no pip configuration file and no ``PIP_*`` environment variable (so none of our machines'
find-links, local indexes or constraints: PyPI only, no local wheels), on the real interpreter of
that version, so that environment markers and wheel tags are that Python's. The pip that runs is the
one of the Python running this script (use the project's venv: ``.venv/bin/python
scripts/check_pins.py``). Then every package of each resolution must be pinned with ``==`` at the
resolved version, in requirements.txt or in a file it includes with ``-r`` or ``-c`` (a pin whose
environment marker is false for that Python does not count), and the local project (``-e .``) must
come from its own line.

    python scripts/check_pins.py                    # 3.11, 3.12 and 3.13
    python scripts/check_pins.py --python 3.12      # one version (repeat the option for several)
    python scripts/check_pins.py --python /path/to/python3.13 --sizes

Exit status 0 when every Python resolved and every package is pinned, 1 otherwise (a resolution that
failed, an interpreter not found, an unpinned package or a pin at another version), 2 for bad usage.
An interpreter is looked for as ``pythonX.Y`` on PATH, then under pyenv's ``versions/`` folder, then
in /usr/bin and /usr/local/bin; one that cannot be found is a failure, never skipped.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import glob
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

try:
    from packaging.markers import Marker
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
except ImportError:  # pip vendors packaging; a bare interpreter with pip has it there
    from pip._vendor.packaging.markers import Marker  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]
    from pip._vendor.packaging.version import InvalidVersion, Version  # type: ignore[no-redef]

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_PYTHONS = ("3.11", "3.12", "3.13")
MIN_PIP = (22, 3)  # `pip --python` and `install --report`


# ---------------------------------------------------------------- requirement files


@dataclasses.dataclass(frozen=True)
class Pin:
    """One requirement or constraint line naming a package."""

    name: str            # canonical name
    specifier: str       # as written, e.g. "==2.13.0" or ">=1"
    marker: str | None   # environment marker, None when there is none
    source: str          # "requirements.txt:40"
    constraint: bool     # from a -c file

    @property
    def exact_version(self) -> str | None:
        """The version of a ``==V`` / ``===V`` pin (no wildcard), else None."""
        m = re.fullmatch(r"\s*===?\s*([^,*\s]+)\s*", self.specifier)
        return m.group(1) if m else None

    def applies(self, environment: dict[str, str]) -> bool:
        return self.marker is None or Marker(self.marker).evaluate(dict(environment, extra=""))


@dataclasses.dataclass
class PinFile:
    pins: dict[str, list[Pin]] = dataclasses.field(default_factory=dict)
    local_paths: dict[str, str] = dataclasses.field(default_factory=dict)  # absolute dir -> source
    files: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)

    def add(self, pin: Pin) -> None:
        self.pins.setdefault(pin.name, []).append(pin)


_COMMENT = re.compile(r"(^|\s+)#.*$")
_OPTION_WITH_FILE = {"-r": False, "--requirement": False, "-c": True, "--constraint": True}


def _logical_lines(text: str):
    """(line number, line) as pip reads them: comments stripped, backslash continuations joined."""
    buf, start = "", None
    for number, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw)
        if start is None:
            start = number
        if line.endswith("\\"):
            buf += line[:-1]
            continue
        buf += line
        if buf.strip():
            yield start, buf.strip()
        buf, start = "", None
    if buf.strip():
        yield start, buf.strip()


def _split_option(line: str) -> tuple[str, str] | None:
    """'-c x.txt' / '--constraint=x.txt' / '-cx.txt' -> ('-c', 'x.txt'); None for a non-option line."""
    if not line.startswith("-"):
        return None
    m = re.match(r"(--[a-z0-9-]+)(?:=|\s+)(.*)$", line) or re.match(r"(-[a-zA-Z])\s*(.*)$", line)
    if not m:
        return (line.split()[0], "")
    return m.group(1), m.group(2).strip()


def parse_requirements(path: str | os.PathLike, *, cwd: str | os.PathLike | None = None,
                       constraint: bool = False, into: PinFile | None = None,
                       _seen: set | None = None) -> PinFile:
    """Read a requirements (or constraints) file and the files it names with -r/-c.

    Relative -r/-c paths are taken from the including file's folder (as pip does); local
    project paths (``-e .``, ``./pkg``) from ``cwd`` (pip's working directory; default: the top
    file's folder). Non-pin lines that pip would accept are recorded as they matter: local paths;
    other options (``--index-url`` ...) are ignored; lines that cannot be parsed are errors.
    """
    path = pathlib.Path(path).resolve()
    result = into if into is not None else PinFile()
    seen = _seen if _seen is not None else set()
    cwd = pathlib.Path(cwd).resolve() if cwd is not None else path.parent
    if path in seen:
        return result
    seen.add(path)
    try:
        display = str(path.relative_to(ROOT))
    except ValueError:
        display = str(path)
    result.files.append(display)
    try:
        text = path.read_text()
    except OSError as e:
        result.errors.append(f"{display}: cannot read ({e.strerror})")
        return result
    for number, line in _logical_lines(text):
        source = f"{display}:{number}"
        option = _split_option(line)
        if option is not None:
            flag, value = option
            if flag in _OPTION_WITH_FILE:
                child = pathlib.Path(value)
                if not child.is_absolute():
                    child = path.parent / child
                parse_requirements(child, cwd=cwd, constraint=constraint or _OPTION_WITH_FILE[flag],
                                   into=result, _seen=seen)
            elif flag in ("-e", "--editable"):
                _add_local(result, value, cwd, source)
            continue  # --index-url, --hash, ... : not pins
        head = line.split(";")[0].strip()
        if re.match(r"[a-z][a-z0-9+.-]*://", head) and not head.startswith("file:"):
            result.errors.append(f"{source}: a URL ({head}) is not a pin")
            continue
        if _looks_like_path(head):
            _add_local(result, head, cwd, source)
            continue
        requirement_text = re.sub(r"\s--hash[=\s]\S+", "", line)
        try:
            req = Requirement(requirement_text)
        except InvalidRequirement as e:
            result.errors.append(f"{source}: cannot parse {line!r} ({e})")
            continue
        if req.url:
            result.errors.append(f"{source}: {req.name} from a URL ({req.url}) is not a pin")
            continue
        result.add(Pin(canonicalize_name(req.name), str(req.specifier),
                       str(req.marker) if req.marker else None, source, constraint))
    return result


def _looks_like_path(head: str) -> bool:
    if re.match(r"[A-Za-z0-9._-]+\s*(\[[^\]]*\])?\s*@", head):  # name @ url
        return False
    return head.startswith((".", "/", "file:")) or head.endswith((".whl", ".tar.gz", ".zip"))


def _add_local(result: PinFile, value: str, cwd: pathlib.Path, source: str) -> None:
    value = value.split("#egg=")[0].strip()
    if value.startswith("file:"):
        value = urllib.parse.unquote(urllib.parse.urlparse(value).path)
    result.local_paths[str((cwd / value).resolve())] = source


# ---------------------------------------------------------------- checking a resolution


@dataclasses.dataclass
class Resolved:
    name: str        # canonical
    display: str     # as the package spells it
    version: str
    url: str
    local_dir: str | None  # a local project directory (editable or not), else None
    requires: list[str]
    extras: list[str]


def resolved_packages(report: dict) -> list[Resolved]:
    out = []
    for item in report.get("install", []):
        meta = item["metadata"]
        info = item.get("download_info", {})
        url = info.get("url", "")
        local_dir = None
        if "dir_info" in info and url.startswith("file:"):
            local_dir = str(pathlib.Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).resolve())
        out.append(Resolved(canonicalize_name(meta["name"]), meta["name"], meta["version"], url,
                            local_dir, list(meta.get("requires_dist") or []),
                            list(meta.get("provides_extra") or [])))
    return out


def _required_by(name: str, packages: list[Resolved], environment: dict) -> list[str]:
    """Resolved packages whose dependencies name ``name`` (under this environment, any of their extras)."""
    parents = []
    for p in packages:
        for text in p.requires:
            head = re.match(r"\s*([A-Za-z0-9._-]+)", text)
            if not head or canonicalize_name(head.group(1)) != name:
                continue
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is None or any(req.marker.evaluate(dict(environment, extra=e))
                                         for e in ["", *p.extras]):
                parents.append(p.display)
                break
    return sorted(set(parents), key=str.lower)


def _same_version(pinned: str, resolved: str) -> bool:
    """``==pinned`` matches ``resolved`` as PEP 440 says (2.13.0 matches 2.13.0+cpu and 2.13.0.0)."""
    try:
        p, r = Version(pinned), Version(resolved)
    except InvalidVersion:
        return pinned == resolved
    return p == r or (not p.local and p == Version(r.public))


def check_report(report: dict, pinfile: PinFile) -> tuple[list[Resolved], list[str]]:
    """The resolved packages of a pip ``--report`` and the problems: unpinned or mismatched packages."""
    environment = report.get("environment", {})
    packages = resolved_packages(report)
    problems = []
    for pkg in packages:
        if pkg.local_dir is not None:
            if pkg.local_dir not in pinfile.local_paths:
                problems.append(f"local project {pkg.display} {pkg.version} from {pkg.local_dir}: "
                                f"no -e/path line names that folder")
            continue
        applicable = [p for p in pinfile.pins.get(pkg.name, []) if p.applies(environment)]
        exact = [p for p in applicable if p.exact_version is not None]
        parents = _required_by(pkg.name, packages, environment)
        via = f" (required by {', '.join(parents)})" if parents else ""
        if not exact:
            loose = "; only " + ", ".join(f"{p.specifier or 'unversioned'} at {p.source}" for p in applicable) \
                if applicable else ""
            problems.append(f"unpinned: {pkg.display}=={pkg.version}{via}{loose}")
            continue
        for p in exact:
            if not _same_version(p.exact_version, pkg.version):
                problems.append(f"mismatch: {pkg.display} resolved to {pkg.version}, pinned "
                                f"{p.specifier} at {p.source}{via}")
    return packages, problems


def unused_constraints(pinfile: PinFile, resolved_names: set[str]) -> list[Pin]:
    """Constraint pins that no checked resolution installs."""
    return [p for pins in pinfile.pins.values() for p in pins
            if p.constraint and p.name not in resolved_names]


# ---------------------------------------------------------------- running pip


def find_interpreter(spec: str) -> tuple[str | None, str]:
    """(path, note) for '3.12' or a path to an interpreter; path None when none works."""
    if os.sep in spec or spec.startswith("python"):
        candidates = [shutil.which(spec) or spec]
        want = None
    else:
        want = spec
        candidates = [shutil.which(f"python{spec}")]
        pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
        found = glob.glob(os.path.join(pyenv_root, "versions", f"{spec}.*", "bin", f"python{spec}"))
        found = [f for f in found if re.fullmatch(re.escape(spec) + r"\.\d+",
                                                   pathlib.Path(f).parent.parent.name)]
        candidates += sorted(found, key=lambda f: int(pathlib.Path(f).parent.parent.name.split(".")[2]),
                             reverse=True)
        candidates += [f"/usr/bin/python{spec}", f"/usr/local/bin/python{spec}"]
    tried = []
    for c in candidates:
        if not c or c in tried:
            continue
        tried.append(c)
        try:
            out = subprocess.run([c, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and (want is None or out.stdout.strip() == want):
            return c, out.stdout.strip()
    return None, "tried " + ", ".join(tried)


def clean_environment() -> dict[str, str]:
    """This process's environment without pip's settings: no PIP_* variable, no config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # pip reads no configuration file at all (build envs too)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pip_version() -> tuple[int, ...]:
    out = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True,
                         env=clean_environment())
    m = re.match(r"pip (\d+)\.(\d+)", out.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


# Transport settings only (certificates, timeouts, retries, proxy): carried over from this
# environment as command-line options, since --isolated ignores PIP_* variables. None of them changes
# what pip resolves.
TRANSPORT_ENV = {"PIP_CERT": "--cert", "PIP_DEFAULT_TIMEOUT": "--timeout", "PIP_TIMEOUT": "--timeout",
                 "PIP_RETRIES": "--retries", "PIP_PROXY": "--proxy"}


def pip_command(interpreter: str, requirements: pathlib.Path, report_path: pathlib.Path,
                index_url: str | None, fast_deps: bool, environ: dict | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    cmd = [sys.executable, "-m", "pip", "--isolated", "--no-input", "--disable-pip-version-check",
           "--python", interpreter]
    for variable, option in TRANSPORT_ENV.items():
        if environ.get(variable) and option not in cmd:
            cmd += [option, environ[variable]]
    cmd += ["install", "--dry-run", "--ignore-installed", "--report", str(report_path)]
    if index_url:
        cmd += ["--index-url", index_url]
    if fast_deps:
        # Read each wheel's metadata with HTTP range requests instead of downloading the wheel
        # (PyPI serves .metadata files, which pip uses on its own, but an index or proxy that does
        # not announce them makes pip download every wheel: ~3 GB per Python here). Same resolver.
        cmd += ["--use-feature", "fast-deps"]
    return cmd + ["-r", str(requirements)]


def resolve(interpreter: str, requirements: pathlib.Path, report_path: pathlib.Path,
            index_url: str | None, fast_deps: bool = True) -> subprocess.CompletedProcess:
    run = lambda fd: subprocess.run(  # noqa: E731
        pip_command(interpreter, requirements, report_path, index_url, fd),
        capture_output=True, text=True, env=clean_environment(), cwd=requirements.parent)
    proc = run(fast_deps)
    if fast_deps and proc.returncode != 0 and "fast-deps" in proc.stderr and "invalid choice" in proc.stderr:
        proc = run(False)  # a pip without the feature: download the wheels instead
    return proc


def pip_failure_lines(output: str, keep: int = 30) -> list[str]:
    """The end of pip's output that explains a failure: from its first ERROR or conflict report."""
    lines = [line for line in output.splitlines() if line.strip()
             and not line.startswith("[notice]") and "fast-deps" not in line]
    for i, line in enumerate(lines):
        if line.startswith("ERROR") or line.startswith("The conflict is caused by"):
            return lines[i:][-keep:]
    return lines[-keep:]


def download_sizes(packages: list[Resolved]) -> tuple[int, list[tuple[int, str]], list[str]]:
    """Total bytes of the resolved files (HTTP HEAD on their URLs), the sizes, and failures."""
    def head(pkg):
        request = urllib.request.Request(pkg.url, method="HEAD")
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.headers["Content-Length"])
    sizes, failed = [], []
    remote = [p for p in packages if p.url.startswith("http")]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for pkg, fut in [(p, pool.submit(head, p)) for p in remote]:
            try:
                sizes.append((fut.result(), f"{pkg.display}=={pkg.version}"))
            except Exception as e:  # noqa: BLE001 - reported, counted as a failure
                failed.append(f"{pkg.display}: {e}")
    return sum(s for s, _ in sizes), sorted(sizes, reverse=True), failed


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", metavar="VERSION_OR_PATH",
                        help=f"a Python version (3.12) or interpreter path; repeatable "
                             f"(default: {', '.join(DEFAULT_PYTHONS)})")
    parser.add_argument("--requirements", default=str(ROOT / "requirements.txt"),
                        help="the requirements file (default: the repository's requirements.txt)")
    parser.add_argument("--index-url", default=None,
                        help="the index to resolve from (default: pip's own, PyPI)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="resolutions run at once (default: all)")
    parser.add_argument("--no-fast-deps", action="store_true",
                        help="let pip download whole wheels for their metadata (slower; default: "
                             "HTTP range requests, pip's fast-deps)")
    parser.add_argument("--keep-reports", metavar="DIR", help="write pip's reports there")
    parser.add_argument("--sizes", action="store_true",
                        help="also sum the download sizes of each resolution (HTTP HEAD on each file)")
    args = parser.parse_args(argv)
    pythons = args.python or list(DEFAULT_PYTHONS)
    requirements = pathlib.Path(args.requirements).resolve()

    version = pip_version()
    if version < MIN_PIP:
        print(f"check_pins: pip {'.'.join(map(str, version))} of {sys.executable} is too old: "
              f"pip >= {'.'.join(map(str, MIN_PIP))} is needed (`pip --python`, `install --report`)")
        return 1
    pinfile = parse_requirements(requirements)
    n_pins = sum(len(v) for v in pinfile.pins.values())
    print(f"check_pins: {' + '.join(pinfile.files)} ({n_pins} pins), pip {'.'.join(map(str, version))}, "
          f"index {args.index_url or 'PyPI (pip default)'}, no pip config or local wheels")
    failed = False
    for error in pinfile.errors:
        print(f"  error: {error}")
        failed = True

    report_dir = pathlib.Path(args.keep_reports or tempfile.mkdtemp(prefix="check_pins_"))
    report_dir.mkdir(parents=True, exist_ok=True)
    jobs = args.jobs or len(pythons)

    def run_one(spec):
        interpreter, note = find_interpreter(spec)
        if interpreter is None:
            return spec, None, note, None, 0.0
        report_path = report_dir / f"report-{note}.json"
        started = time.monotonic()
        proc = resolve(interpreter, requirements, report_path, args.index_url, not args.no_fast_deps)
        return spec, interpreter, note, (proc, report_path), time.monotonic() - started

    all_names: set[str] = set()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        results = list(pool.map(run_one, pythons))
    for spec, interpreter, note, ran, seconds in results:
        if interpreter is None:
            print(f"Python {spec}: FAILED, no interpreter found ({note})")
            failed = True
            continue
        proc, report_path = ran
        label = f"Python {note} ({interpreter})"
        if proc.returncode != 0 or not report_path.exists():
            print(f"{label}: FAILED, pip could not resolve (exit {proc.returncode}, {seconds:.0f} s):")
            for line in pip_failure_lines(proc.stdout + "\n" + proc.stderr):
                print(f"    {line}")
            failed = True
            continue
        report = json.loads(report_path.read_text())
        packages, problems = check_report(report, pinfile)
        all_names.update(p.name for p in packages)
        env = report.get("environment", {})
        where = f"{env.get('platform_system', '?')} {env.get('platform_machine', '?')}"
        status = "all pinned" if not problems else f"{len(problems)} problem(s)"
        print(f"{label}, {where}: resolved {len(packages)} packages in {seconds:.0f} s: {status}")
        for problem in problems:
            print(f"    {problem}")
        failed = failed or bool(problems)
        if args.sizes:
            total, sizes, size_failures = download_sizes(packages)
            biggest = ", ".join(f"{n} {s / 1e6:.0f} MB" for s, n in sizes[:4])
            print(f"    downloads: {total / 1e9:.2f} GB in {len(sizes)} files (largest: {biggest})")
            for f in size_failures:
                print(f"    size unknown: {f}")
    for pin in unused_constraints(pinfile, all_names) if not failed else []:
        print(f"  note: constraint {pin.name}{pin.specifier} ({pin.source}) is used by none of the "
              f"checked resolutions")
    print(f"check_pins: {'FAILED' if failed else 'OK'} ({time.monotonic() - started:.0f} s)"
          + (f"; reports in {report_dir}" if args.keep_reports else ""))
    if not args.keep_reports:
        shutil.rmtree(report_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
