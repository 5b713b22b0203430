"""Build the Kubernetes binaries and etcd from Go modules, once, into the cache.

Each binary is built in a throwaway module under ``<cache>/build/<name>-<ver>``:

* kube-apiserver: ``require k8s.io/kubernetes <ver>`` plus one ``replace`` per
  staging module (``k8s.io/api``, ``k8s.io/apiserver``, ...) pinned to the
  published ``v0.x.y`` that matches. The list of staging modules is read from
  k8s.io/kubernetes's own go.mod (its ``=> ./staging/src/...`` lines), so a new
  release needs no code change here.
* etcd: ``require go.etcd.io/etcd/server/v3 <ver>``; its ``main`` package is the
  module root.
* tools such as helm (``pushrelay_devstack.tools``): ``require <module> <ver>``
  and its command package, the versions its own go.mod pins.
* docker-compose: ``require github.com/docker/compose/v2 <ver>`` plus the
  ``exclude`` directives of compose's own go.mod (a dependency's excludes do not
  apply to the main module, which is why ``go install pkg@ver`` refuses it).

The result lands in ``<cache>/bin/<name>-<ver>``; later runs only stat it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pushrelay_devstack.errors import DevstackError
from pushrelay_devstack.paths import COMPOSE_VERSION, ETCD_VERSION, KUBERNETES_VERSION, cache_dir
from pushrelay_devstack.procs import file_lock

Progress = Callable[[str], None]

_STAGING = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/", re.M)
_EXCLUDE_BLOCK = re.compile(r"^exclude\s*\((.*?)^\)", re.M | re.S)
_EXCLUDE_LINE = re.compile(r"^exclude[ \t]+([^\s(]\S*[ \t]+\S+)", re.M)
_TOOLS_GO = """//go:build tools

package build

import _ "{package}"
"""


def _go(component: str) -> str:
    go = shutil.which("go")
    if go is None:
        raise DevstackError(
            component, "the Go toolchain (`go`, >= 1.25) is not on PATH; install Go to build it"
        )
    return go


def _run(component: str, argv: list[str], cwd: Path, log: Path, env: dict[str, str]) -> str:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=out, check=False
        )
        out.write(proc.stdout)
    if proc.returncode != 0:
        raise DevstackError(component, f"`{' '.join(argv[:3])} ...` failed", log)
    return proc.stdout.decode()


def staging_replaces(kubernetes_gomod: str, version: str) -> list[str]:
    """``replace`` lines pinning each staging module of k8s.io/kubernetes ``version``.

    k8s.io/kubernetes v1.X.Y replaces its staging modules with local paths;
    each is published on its own as ``v0.X.Y``.
    """
    staging_version = "v0." + version.removeprefix("v").split(".", 1)[1]
    modules = sorted(set(_STAGING.findall(kubernetes_gomod)))
    return [f"\t{m} => {m} {staging_version}" for m in modules]


def excludes(gomod: str) -> list[str]:
    """The ``exclude`` directives of a go.mod, as ``module version`` lines."""
    found = []
    for block in _EXCLUDE_BLOCK.findall(gomod):
        for line in block.splitlines():
            line = line.split("//", 1)[0].strip()
            if line:
                found.append(line)
    found += _EXCLUDE_LINE.findall(gomod)
    return found


def _module_gomod(component: str, module: str, version: str, go: str, work: Path, log: Path,
                  env: dict[str, str]) -> str:
    out = _run(component, [go, "mod", "download", "-json", f"{module}@{version}"], work, log, env)
    return Path(json.loads(out)["GoMod"]).read_text()


def _kubernetes_replaces(component: str, version: str, go: str, work: Path, log: Path,
                         env: dict[str, str]) -> list[str]:
    gomod = _module_gomod(component, "k8s.io/kubernetes", version, go, work, log, env)
    replaces = staging_replaces(gomod, version)
    if not replaces:
        raise DevstackError(component, f"no staging modules in k8s.io/kubernetes@{version}", log)
    return replaces


def _build(
    component: str,
    *,
    name: str,
    version: str,
    module_require: str,
    package: str,
    progress: Progress,
    eta: str,
    ldflags: Sequence[str] = (),
    inherit_excludes: bool = False,
) -> Path:
    """Build ``package`` of ``module_require`` at ``version`` once; ``ldflags`` are
    extra linker flags (``-X`` version stamps); ``inherit_excludes`` copies the
    module's own ``exclude`` directives into the throwaway main module."""
    out = cache_dir() / "bin" / f"{name}-{version}"
    if out.is_file() and os.access(out, os.X_OK):
        return out
    work = cache_dir() / "build" / f"{name}-{version}"
    with file_lock(cache_dir() / "build" / f"{name}-{version}.lock"):
        if out.is_file():
            return out
        go = _go(component)
        work.mkdir(parents=True, exist_ok=True)
        log = work / "build.log"
        log.write_text("")
        env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0")
        env.setdefault("GOTOOLCHAIN", "local")
        progress(f"building {name} {version} from Go modules (first run only, {eta}); "
                 f"log: {log}")
        started = time.monotonic()
        lines = ["module pushrelay.local/build", "", "go 1.25.0", "",
                 f"require {module_require} {version}", ""]
        (work / "go.mod").write_text("module pushrelay.local/build\n\ngo 1.25.0\n")
        if module_require == "k8s.io/kubernetes":
            replaces = _kubernetes_replaces(component, version, go, work, log, env)
            lines += ["replace (", *replaces, ")", ""]
        if inherit_excludes:
            gomod = _module_gomod(component, module_require, version, go, work, log, env)
            lines += ["exclude (", *(f"\t{e}" for e in excludes(gomod)), ")", ""]
        (work / "go.mod").write_text("\n".join(lines))
        (work / "tools.go").write_text(_TOOLS_GO.format(package=package))
        _run(component, [go, "mod", "tidy"], work, log, env)
        tmp = out.with_name(out.name + ".tmp")
        out.parent.mkdir(parents=True, exist_ok=True)
        stamp = _version_ldflags(version) if module_require == "k8s.io/kubernetes" else []
        flags = " ".join(["-s", "-w", *stamp, *ldflags])
        _run(component, [go, "build", "-trimpath", f"-ldflags={flags}", "-o", str(tmp), package],
             work, log, env)
        tmp.replace(out)
        progress(f"built {name} {version} in {time.monotonic() - started:.0f}s -> {out}")
    return out


def _version_ldflags(version: str) -> list[str]:
    """Stamp the release into /version (``make`` does this from git; we have no git)."""
    major, minor = version.removeprefix("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor={major}",
                  f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean"]
    return flags


def ensure_kube_apiserver(progress: Progress, version: str = KUBERNETES_VERSION) -> Path:
    return _build(
        "kube-apiserver",
        name="kube-apiserver",
        version=version,
        module_require="k8s.io/kubernetes",
        package="k8s.io/kubernetes/cmd/kube-apiserver",
        progress=progress,
        eta="~7 min on 2 cores with nothing cached",
    )


def ensure_kube_controller_manager(
    progress: Progress, version: str = KUBERNETES_VERSION
) -> Path:
    """Only its namespace and garbage-collector controllers run, so deleted
    namespaces really go away (with everything in them)."""
    return _build(
        "kube-controller-manager",
        name="kube-controller-manager",
        version=version,
        module_require="k8s.io/kubernetes",
        package="k8s.io/kubernetes/cmd/kube-controller-manager",
        progress=progress,
        eta="~1-2 min once kube-apiserver is built",
    )


def ensure_kube_command(
    command: str, progress: Progress, version: str = KUBERNETES_VERSION
) -> Path:
    """Any ``k8s.io/kubernetes/cmd/<command>`` (kubelet, kube-proxy, kube-scheduler,
    kubectl), built like kube-apiserver and sharing its module and build caches."""
    return _build(
        command,
        name=command,
        version=version,
        module_require="k8s.io/kubernetes",
        package=f"k8s.io/kubernetes/cmd/{command}",
        progress=progress,
        eta="~1 min once kube-apiserver is built, ~5 min with nothing cached",
    )


def cached_binary(name: str, version: str = KUBERNETES_VERSION) -> Path | None:
    """The built binary if it is in the cache (never builds)."""
    path = cache_dir() / "bin" / f"{name}-{version}"
    return path if path.is_file() else None


def ensure_local_main(name: str, version: str, source: str, progress: Progress) -> Path:
    """A static binary from one self-contained ``main.go`` (standard library only)."""
    out = cache_dir() / "bin" / f"{name}-{version}"
    if out.is_file() and os.access(out, os.X_OK):
        return out
    work = cache_dir() / "build" / f"{name}-{version}"
    with file_lock(cache_dir() / "build" / f"{name}-{version}.lock"):
        if out.is_file():
            return out
        go = _go(name)
        work.mkdir(parents=True, exist_ok=True)
        log = work / "build.log"
        log.write_text("")
        (work / "go.mod").write_text(f"module pushrelay.local/{name}\n\ngo 1.25.0\n")
        (work / "main.go").write_text(source)
        env = dict(os.environ, CGO_ENABLED="0")
        env.setdefault("GOTOOLCHAIN", "local")
        tmp = out.with_name(out.name + ".tmp")
        out.parent.mkdir(parents=True, exist_ok=True)
        _run(name, [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), "."],
             work, log, env)
        tmp.replace(out)
        progress(f"built {name} {version} -> {out}")
    return out


def ensure_etcd(progress: Progress, version: str = ETCD_VERSION) -> Path:
    return _build(
        "etcd",
        name="etcd",
        version=version,
        module_require="go.etcd.io/etcd/server/v3",
        package="go.etcd.io/etcd/server/v3",
        progress=progress,
        eta="~2 min on 2 cores",
    )


def ensure_docker_compose(progress: Progress, version: str = COMPOSE_VERSION) -> Path:
    """Compose v2, runnable standalone (``docker-compose up``) or as a CLI plugin."""
    return _build(
        "docker-compose",
        name="docker-compose",
        version=version,
        module_require="github.com/docker/compose/v2",
        package="github.com/docker/compose/v2/cmd",
        progress=progress,
        eta="~4 min on 2 cores with nothing cached",
        inherit_excludes=True,
        ldflags=[f"-X github.com/docker/compose/v2/internal.Version={version}"],
    )
