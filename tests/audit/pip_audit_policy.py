"""``make audit``: pip-audit of the installed dependency set, with pushrelay's policy.

Policy (docs/reliability.md, "Dependency audit"):

* the audited set is the project's virtualenv as ``make install`` builds it:
  runtime dependencies and test tooling, pinned to what is installed; pushrelay
  itself (editable, not on PyPI) is skipped;
* vulnerability data: PyPI's advisory feed (``--vulnerability-service pypi``);
* a known vulnerability **with a fixed version available** fails the audit,
  unless ``tests/audit/allowlist.toml`` lists it with a reason and an expiry
  date that has not passed;
* a vulnerability with **no fix yet** is reported, and fails only with
  ``--strict`` (then it too needs an allowlist entry);
* an expired or malformed allowlist entry fails the audit;
* pip-audit itself failing (no network, resolver error) fails the audit: an
  audit that could not run is not a pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALLOWLIST = Path(__file__).with_name("allowlist.toml")
REQUIRED = ("id", "package", "reason", "expires")


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fixes: tuple[str, ...]


def load_allowlist(path: Path, today: dt.date) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Active entries by id, and problems (expired or malformed entries)."""
    if not path.exists():
        return {}, []
    data = tomllib.loads(path.read_text())
    active: dict[str, dict[str, Any]] = {}
    problems = []
    for entry in data.get("allow", []):
        missing = [k for k in REQUIRED if not entry.get(k)]
        if missing:
            problems.append(f"allowlist entry {entry.get('id', '?')}: missing {missing}")
            continue
        expires = entry["expires"]
        if not isinstance(expires, dt.date):
            problems.append(f"allowlist entry {entry['id']}: expires must be a date")
            continue
        if expires < today:
            problems.append(f"allowlist entry {entry['id']} ({entry['package']}) expired on "
                            f"{expires}: re-assess it")
            continue
        active[entry["id"]] = entry
    return active, problems


def findings(report: dict[str, Any]) -> list[Finding]:
    out = []
    for dep in report.get("dependencies", []):
        for vuln in dep.get("vulns", []):
            out.append(Finding(dep["name"], dep.get("version", "?"), vuln["id"],
                               tuple(vuln.get("aliases") or ()),
                               tuple(vuln.get("fix_versions") or ())))
    return out


def evaluate(found: list[Finding], allowed: dict[str, dict[str, Any]], strict: bool,
             ) -> tuple[list[str], list[str]]:
    """(failures, notes)."""
    failures, notes = [], []
    for f in found:
        entry = next((allowed[i] for i in (f.id, *f.aliases) if i in allowed), None)
        what = f"{f.package} {f.version}: {f.id}"
        if entry is not None and entry["package"].lower() == f.package.lower():
            notes.append(f"allowed until {entry['expires']}: {what} ({entry['reason']})")
        elif f.fixes:
            failures.append(f"{what} — fixed in {', '.join(f.fixes)}: upgrade")
        elif strict:
            failures.append(f"{what} — no fix released (strict mode)")
        else:
            notes.append(f"no fix released yet, watch it: {what}")
    return failures, notes


def run_pip_audit() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        argv = [sys.executable, "-m", "pip_audit", "--format", "json", "--output", str(out),
                "--vulnerability-service", "pypi", "--progress-spinner", "off",
                "--skip-editable"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        # exit 1 only means "vulnerabilities found"; the policy decides below
        if done.returncode not in (0, 1) or not out.exists():
            raise SystemExit(f"audit: pip-audit could not run (exit {done.returncode}):\n"
                             f"{done.stderr[-3000:]}")
        report: dict[str, Any] = json.loads(out.read_text())
        return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strict", action="store_true",
                        help="also fail on vulnerabilities that have no fix yet")
    parser.add_argument("--report", type=Path, help="a pip-audit JSON report to judge "
                        "instead of running pip-audit")
    args = parser.parse_args()
    report = json.loads(args.report.read_text()) if args.report else run_pip_audit()
    allowed, problems = load_allowlist(ALLOWLIST, dt.date.today())
    found = findings(report)
    failures, notes = evaluate(found, allowed, args.strict)
    audited = len(report.get("dependencies", []))
    print(f"audit: {audited} packages audited, {len(found)} known vulnerabilities")
    for line in notes:
        print(f"  note: {line}")
    for line in problems + failures:
        print(f"  FAIL: {line}")
    return 1 if problems or failures else 0


if __name__ == "__main__":
    sys.exit(main())
