"""`fjord image build|list|prune`: the image cache from the command line."""

from __future__ import annotations

import time
from typing import Any

import click

from fjord.cli import config_option, config_path, json_option, require_root
from fjord.containers.image import Image, ImageCache, ImageSpec, prune, spec_for, used_images
from fjord.containers.progress import BuildProgress
from fjord.containers.rootfs import all_records
from fjord.environment import current


@click.group(name="image")
def image() -> None:
    """Debian root filesystem images (mmdebstrap), cached under /var/lib/fjord/images.

    \b
    An image is built once per suite, APT sources, architecture, package set and
    locales, and shared read-only by the overlay containers made from it.
    """


def _wanted(path: str | None, names: tuple[str, ...], *, fresh: bool = False
            ) -> dict[str, tuple[ImageSpec, list[str]]]:
    """The images the file's containers need; ``fresh``: as on a server with none yet
    (a lab's), not as this machine's container records say they were built."""
    from fjord.errors import FjordError
    from fjord.state.known import load

    desired = load(config_path(path), fresh=fresh)
    known = {c.name for c in desired.containers}
    unknown = sorted(set(names) - known)
    if unknown:
        raise FjordError(f"no container named {', '.join(unknown)} in {desired.filename}")
    wanted: dict[str, tuple[ImageSpec, list[str]]] = {}
    for c in desired.containers:
        if names and c.name not in names:
            continue
        spec = spec_for(c, desired)
        wanted.setdefault(spec.key, (spec, []))[1].append(c.name)
    return wanted


@image.command()
@config_option
@json_option
@click.option("--for-labs", is_flag=True,
              help="Build into the image cache that simulated servers (fjord lab) share: "
                   "a lab has no Internet, so its images are built here, on the machine.")
@click.argument("containers", nargs=-1, metavar="[CONTAINER]...")
def build(config_path: str | None, as_json: bool, for_labs: bool,
          containers: tuple[str, ...]) -> None:
    """Build the images the configuration's containers need (all, or those named).

    Cached images are used as they are; a build shows a progress bar, and a failed or
    interrupted one leaves nothing behind.
    """
    from fjord.ui import console, print_json

    out = console(stderr=as_json)
    if for_labs:
        import dataclasses

        from fjord import environment
        from fjord.lab.mounts import shared_images_dir

        environment.use(dataclasses.replace(environment.current(),
                                            images_override=shared_images_dir()))
    cache = ImageCache()
    results = []
    for key, (spec, names) in _wanted(config_path, containers, fresh=for_labs).items():
        start = time.monotonic()
        found = cache.get(key)
        built = found is None
        if found is None:
            require_root("building an image")
            found = build_with_bar(cache, spec, out)
        seconds = time.monotonic() - start
        results.append({"key": key, "built": built, "seconds": round(seconds, 3),
                        "containers": names, "path": str(found.rootfs)})
        if not as_json:
            what = f"built in {seconds:.1f} s" if built else "cached"
            out.print(f"{key}  {what}  [dim]({', '.join(names)})[/]")
    if as_json:
        print_json({"images": results})


def build_with_bar(cache: ImageCache, spec: ImageSpec, out: Any) -> Image:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task(f"{spec.key}: starting", total=1.0)

        def update(state: BuildProgress) -> None:
            bar.update(task, completed=state.fraction, description=f"{spec.key}: {state.stage}")

        return cache.build(spec, update)


def _users() -> dict[str, list[str]]:
    return used_images({"name": r.name, "image": r.image} for r in all_records())


@image.command("list")
@json_option
def list_images(as_json: bool) -> None:
    """Cached images: size, age, and the containers made from each."""
    from fjord.ui import console, print_json

    cache = ImageCache()
    users = _users()
    now = time.time()
    rows = [_row(img, users.get(img.key, []), now) for img in cache.images()]
    if as_json:
        print_json({"images": rows})
        return
    out = console()
    if not rows:
        out.print(f"No images in {cache.root}.")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("IMAGE", "SIZE", "AGE", "EXTRA PACKAGES", "CONTAINERS"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["key"], _size(row["size"]), _age(row["age_seconds"]),
                      " ".join(row["extra_packages"]) or "-", " ".join(row["containers"]) or "-")
    out.print(table)


def _row(img: Image, users: list[str], now: float) -> dict[str, Any]:
    from fjord.containers.image import base_packages

    inputs = img.inputs
    return {
        "key": img.key,
        "suite": inputs.get("suite"),
        "architecture": inputs.get("architecture"),
        "extra_packages": [p for p in inputs.get("packages", [])
                           if p not in base_packages(str(inputs.get("suite", "")))],
        "locales": inputs.get("locales", []),
        "size": img.size,
        "created": img.created,
        "age_seconds": round(now - img.created),
        "containers": sorted(users),
        "path": str(img.rootfs),
    }


@image.command("prune")
@config_option
@json_option
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be removed.")
def prune_images(config_path: str | None, as_json: bool, dry_run: bool) -> None:
    """Remove images no container uses, and leftovers of interrupted builds.

    With -c (or $FJORD_CONFIG), images the file's containers would use are kept too.
    """
    from fjord.ui import console, print_json

    keep = set(_users())
    if config_path or current().config:
        keep |= set(_wanted(config_path, ()))
    if not dry_run:
        require_root("removing images")
    cache = ImageCache()
    removed = prune(cache, keep, dry_run=dry_run)
    kept = [i for i in cache.images() if i.key in keep]
    if as_json:
        print_json({"removed": [{"key": i.key, "size": i.size} for i in removed],
                    "dry_run": dry_run})
        return
    out = console()
    verb = "Would remove" if dry_run else "Removed"
    for img in removed:
        out.print(f"{verb} {img.key} ({_size(img.size)})")
    total = sum(i.size for i in removed)
    out.print(f"{verb} {len(removed)} image{'s' if len(removed) != 1 else ''}, "
              f"{_size(total)}; kept {len(kept)}.")


def _size(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
