"""Container images built here, with no registry: base images, Kafka, pushrelay.

* **Base images** are Debian root filesystems made by ``debootstrap
  --variant=minbase`` from Debian's package mirror and ``docker import``-ed.
  A :class:`BaseRecipe` (suite, mirror, packages) is hashed; the hash is in the
  tag (``pushrelay-base/<name>:<suite>-<hash>``) and in the cached tarball
  ``<cache>/images/<name>-<hash>.tar``, so a changed recipe builds anew and an
  unchanged one is a ``docker image inspect`` (or one ``docker import`` of the
  cached tarball on a fresh engine).
* **Kafka** (``pushrelay-kafka:<ver>``): the jars :func:`kafka.ensure_jars`
  resolves from Maven Central on the JRE base (``kafka-image/Dockerfile``).
* **pushrelay** (``pushrelay:<ver>`` and ``pushrelay:latest``):
  ``compose/Dockerfile`` with ``BASE`` set to the Python base; Docker's layer
  cache makes a rebuild with unchanged sources a few seconds.

Builds run with ``--network host``: the engine has no bridge, and the build
steps reach only the package registries.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from pushrelay import __version__
from pushrelay_devstack import apt, kafka
from pushrelay_devstack.docker import Engine
from pushrelay_devstack.errors import DevstackError
from pushrelay_devstack.paths import KAFKA_VERSION, cache_dir
from pushrelay_devstack.procs import file_lock

COMPONENT = "images"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PUSHRELAY_IMAGE = "pushrelay"
KAFKA_IMAGE = "pushrelay-kafka"
Progress = Callable[[str], None]

# Bump when the way a rootfs is made changes (the hash covers it).
_ROOTFS_STEPS = 1
_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
         "usr/share/info", "var/log")


@dataclass(frozen=True)
class BaseRecipe:
    """A minbase Debian root filesystem with ``packages`` (and their dependencies)."""

    name: str
    packages: tuple[str, ...]
    suite: str = "bookworm"
    mirror: str = DEBIAN_MIRROR

    @property
    def digest(self) -> str:
        recipe = {**asdict(self), "steps": _ROOTFS_STEPS}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"pushrelay-base/{self.name}:{self.suite}-{self.digest}"

    @property
    def tarball(self) -> Path:
        return cache_dir() / "images" / f"{self.name}-{self.suite}-{self.digest}.tar"


# python3 is 3.11 on bookworm; python3-venv gives the build stage ensurepip.
PYTHON_BASE = BaseRecipe("python", ("python3", "python3-venv", "ca-certificates"))
JRE_BASE = BaseRecipe("jre", ("openjdk-17-jre-headless", "ca-certificates"))


def _log() -> Path:
    path = cache_dir() / "logs" / "images.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _locked(name: str) -> AbstractContextManager[None]:
    """One build of ``name`` at a time across processes."""
    return file_lock(cache_dir() / "images" / f".{name}.lock")


RECIPE_LABEL = "org.pushrelay.recipe"
BUILT_LABEL = "org.pushrelay.built"  # on every image built here, so its leftovers can be pruned


def exists(engine: Engine, ref: str) -> bool:
    return engine.run(["image", "inspect", "--format", "{{.Id}}", ref], check=False).returncode == 0


def recipe_of(engine: Engine, ref: str) -> str | None:
    """The recipe digest an image was labelled with, None when absent or unlabelled."""
    proc = engine.run(["image", "inspect", "--format",
                       f'{{{{ index .Config.Labels "{RECIPE_LABEL}" }}}}', ref], check=False)
    value = proc.stdout.decode().strip()
    return value if proc.returncode == 0 and value not in ("", "<no value>") else None


def _run(argv: list[str], log: Path) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise DevstackError(COMPONENT, f"`{' '.join(argv[:3])} ...` failed", log)


def _debootstrap(recipe: BaseRecipe, progress: Progress) -> None:
    """Make ``recipe.tarball`` (a root filesystem tar)."""
    apt.ensure_commands(COMPONENT, {"debootstrap": "debootstrap"}, progress)
    log = _log()
    work = cache_dir() / "images" / "build" / f"{recipe.name}-{recipe.digest}"
    shutil.rmtree(work, ignore_errors=True)
    rootfs = work / "rootfs"
    rootfs.mkdir(parents=True)
    progress(f"debootstrap {recipe.suite} ({', '.join(recipe.packages)}) for {recipe.tag} "
             f"(first run only, ~1.5 min); log: {log}")
    started = time.monotonic()
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}",
          recipe.suite, str(rootfs), recipe.mirror], log)
    for rel in _TRIM:
        target = rootfs / rel
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {recipe.mirror} {recipe.suite} main\n"
        f"deb {recipe.mirror} {recipe.suite}-updates main\n"
        f"deb {recipe.mirror.rsplit('/', 1)[0]}/debian-security {recipe.suite}-security main\n")
    tmp = recipe.tarball.with_suffix(".tmp")
    _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tmp), "."], log)
    tmp.replace(recipe.tarball)
    shutil.rmtree(work, ignore_errors=True)
    progress(f"root filesystem in {time.monotonic() - started:.0f}s -> {recipe.tarball}")


def ensure_base(engine: Engine, recipe: BaseRecipe, progress: Progress) -> str:
    """The tag of ``recipe``'s image in ``engine``, made (or imported from cache) if missing."""
    if exists(engine, recipe.tag):
        return recipe.tag
    with _locked(f"base-{recipe.name}"):
        if exists(engine, recipe.tag):
            return recipe.tag
        if not recipe.tarball.is_file():
            _debootstrap(recipe, progress)
        with recipe.tarball.open("rb") as tar:
            engine.run(["import",
                        "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                        "/sbin:/bin",
                        "--change", "ENV LANG=C.UTF-8",
                        "--change", 'CMD ["/bin/sh"]',
                        "--change", f"LABEL org.pushrelay.base-recipe={recipe.digest}",
                        "-", recipe.tag], input=tar.read(), log=_log())
        progress(f"imported {recipe.tag}")
    return recipe.tag


def pip_cert() -> Path | None:
    """The CA bundle this host's pip trusts, if it names one (a TLS-inspecting proxy)."""
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


def build(engine: Engine, *, context: Path, dockerfile: Path, tags: list[str],
          build_args: dict[str, str], progress: Progress, recipe: str | None = None) -> None:
    """``docker build --network host`` (BuildKit) with every tag in ``tags``.

    The host's pip CA bundle, if any, is offered as the build secret ``pip-cert``
    (never stored in a layer).
    """
    argv = ["build", "--network", "host", "-f", str(dockerfile)]
    cert = pip_cert()
    if cert is not None:
        argv += ["--secret", f"id=pip-cert,src={cert}"]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    for tag in tags:
        argv += ["-t", tag]
    if recipe is not None:
        argv += ["--label", f"{RECIPE_LABEL}={recipe}"]
    argv += ["--label", f"{BUILT_LABEL}=1"]
    started = time.monotonic()
    engine.run([*argv, str(context)], log=_log())
    # The previous build of these tags is now untagged; with vfs each costs its full size.
    engine.run(["image", "prune", "--force", "--filter", f"label={BUILT_LABEL}"], log=_log(),
               check=False)
    progress(f"built {', '.join(tags)} in {time.monotonic() - started:.0f}s")


_KAFKA_FILES = ("Dockerfile", "kafka-run")


def _kafka_recipe(version: str, base: str) -> tuple[str, dict[str, bytes]]:
    """The Kafka image's files (besides the jars) and the digest naming them."""
    recipe = resources.files("pushrelay_devstack").joinpath("kafka-image")
    files = {name: recipe.joinpath(name).read_bytes() for name in _KAFKA_FILES}
    files["log4j.properties"] = kafka.LOG4J.encode()
    digest = hashlib.sha256(f"{version}\0{base}".encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name])
    return digest.hexdigest()[:12], files


def _kafka_context(version: str, files: dict[str, bytes], progress: Progress) -> Path:
    libs = kafka.ensure_jars(progress, version)
    context = cache_dir() / "images" / "build" / f"kafka-{version}"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copytree(libs, context / "libs", copy_function=_link_or_copy)
    for name, data in files.items():
        (context / name).write_bytes(data)
    return context


def _link_or_copy(src: str, dst: str) -> None:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def kafka_tag(version: str = KAFKA_VERSION) -> str:
    return f"{KAFKA_IMAGE}:{version}"


def ensure_kafka(engine: Engine, progress: Progress, version: str = KAFKA_VERSION) -> str:
    """``pushrelay-kafka:<version>`` from the Maven jars on the JRE base.

    Rebuilt when missing or when its recipe (files, version, base) changed.
    """
    tag = kafka_tag(version)
    base = ensure_base(engine, JRE_BASE, progress)
    digest, files = _kafka_recipe(version, base)
    if recipe_of(engine, tag) == digest:
        return tag
    with _locked("kafka"):
        if recipe_of(engine, tag) == digest:
            return tag
        context = _kafka_context(version, files, progress)
        build(engine, context=context, dockerfile=context / "Dockerfile", tags=[tag],
              build_args={"BASE": base}, progress=progress, recipe=digest)
        shutil.rmtree(context, ignore_errors=True)
    return tag


def pushrelay_tags() -> list[str]:
    return [f"{PUSHRELAY_IMAGE}:{__version__}", f"{PUSHRELAY_IMAGE}:latest"]


def ensure_pushrelay(engine: Engine, root: Path, progress: Progress) -> str:
    """Build ``compose/Dockerfile`` from the source tree ``root`` (cached layers reused)."""
    base = ensure_base(engine, PYTHON_BASE, progress)
    tags = pushrelay_tags()
    with _locked("pushrelay"):
        build(engine, context=root, dockerfile=root / "compose" / "Dockerfile", tags=tags,
              build_args={"BASE": base}, progress=progress)
    return tags[-1]


def source_root() -> Path:
    """The source tree holding compose/Dockerfile (an editable install's checkout)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "compose" / "Dockerfile").is_file():
        raise DevstackError(COMPONENT, f"no compose/Dockerfile under {root}: building the "
                            "image needs a source checkout (pip install -e .)")
    return root


def image_size(engine: Engine, ref: str) -> int:
    out = engine.run(["image", "inspect", "--format", "{{.Size}}", ref]).stdout
    return int(out.decode().strip())
