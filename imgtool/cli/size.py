"""`imgtool layers`, `imgtool diff`, `imgtool check`: layer sizes and gates for CI."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from imgtool.cli import cli
from imgtool.cli.common import human_size, store_of
from imgtool.cli.table import table_lines

if TYPE_CHECKING:
    from imgtool.analyze import Report

EXIT_RULE_FAILED = 1


def _listing_options(top: int, what: str) -> Any:
    """layers' and diff's: --json, --top, and where the image comes from."""

    def add(f: Any) -> Any:
        f = _source_options(f)
        f = click.option("--top", default=top, show_default=True, help=what)(f)
        return click.option("--json", "as_json", is_flag=True, help="JSON with exact byte counts.")(
            f
        )

    return add


def _source_options(f: Any) -> Any:
    f = click.option("--platform", help="For an index: which platform.")(f)
    f = click.option("--insecure", is_flag=True, help="Plain HTTP / unverified TLS (--remote).")(f)
    f = click.option(
        "--remote", is_flag=True, help="Read the image from its registry: manifest and config only."
    )(f)
    return f


@dataclass(frozen=True)
class _Source:
    """Where the images of a command come from: the options _source_options adds."""

    remote: bool
    insecure: bool
    platform: str | None

    def report(self, ctx: click.Context, name: str) -> Report:
        from imgtool.api import layers as layers_of

        return layers_of(
            store_of(ctx),
            name,
            platform=self.platform,
            remote=self.remote,
            insecure=self.insecure,
        )


def _table(rows: Sequence[tuple[str, ...]], right: set[int]) -> None:
    for line in table_lines(rows, right):
        click.echo(line)


@cli.command()
@click.argument("image")
@_listing_options(10, "Files that waste most.")
@click.pass_context
def layers(ctx: click.Context, image: str, as_json: bool, top: int, **source: Any) -> None:
    """Per-layer sizes, file counts and history, totals, and wasted space.

    IMAGE is a name in the store, a registry reference with --remote, oci:DIR[:REF] or
    docker-archive:FILE[:REF].
    """
    r = _Source(**source).report(ctx, image)
    if as_json:
        click.echo(json.dumps(r.to_dict(top), indent=2))
        return
    rows: list[tuple[str, ...]] = [("#", "DIGEST", "COMPRESSED", "SIZE", "FILES", "CREATED BY")]
    for x in r.rows:
        rows.append(
            (
                "-" if x.index is None else str(x.index),
                x.digest.split(":", 1)[-1][:12] if x.digest else "(empty)",
                human_size(x.compressed) if x.index is not None else "",
                ""
                if x.index is None
                else "?"
                if x.uncompressed is None
                else human_size(x.uncompressed),
                "" if x.index is None else "?" if x.files is None else str(x.files),
                " ".join(x.created_by.split())[:70],
            )
        )
    _table(rows, {2, 3, 4})
    size = "?" if r.uncompressed is None else human_size(r.uncompressed)
    click.echo(
        f"\n{len(r.layers)} layers, {human_size(r.compressed)} compressed, {size} uncompressed"
    )
    if r.remote:
        click.echo("(remote image: compressed sizes and history only; no layer was fetched)")
        return
    a = r.analysis
    assert a is not None
    click.echo(
        f"reclaimable: {human_size(a.reclaimable)} in lower layers that later layers "
        f"overwrite or delete (efficiency {a.efficiency:.2%})"
    )
    click.echo(
        f"dive's figures: {human_size(a.dive_wasted)} wasted (every copy of a path in "
        f"more than one layer, the one that stays included), efficiency "
        f"{a.dive_efficiency:.2%}"
    )
    if a.waste and top:
        click.echo(f"\ntop {min(top, len(a.waste))} reclaimable files:")
        waste_rows: list[tuple[str, ...]] = [("SIZE", "PATH", "ADDED", "REMOVED")]
        for w in a.waste[:top]:
            waste_rows.append(
                (
                    human_size(w.size),
                    "/" + w.path,
                    f"layer {w.added_in}",
                    f"layer {w.removed_in} ({w.how})",
                )
            )
        _table(waste_rows, {0})


@cli.command()
@click.argument("a")
@click.argument("b")
@_listing_options(20, "Paths to show.")
@click.pass_context
def diff(ctx: click.Context, a: str, b: str, as_json: bool, top: int, **source: Any) -> None:
    """What changed from image A to image B: layers, then paths by size."""
    from imgtool.analyze import diff as do_diff

    src = _Source(**source)
    d = do_diff(src.report(ctx, a), src.report(ctx, b))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "a": d.a.name,
                    "b": d.b.name,
                    "size_a": d.a.size,
                    "size_b": d.b.size,
                    "delta": d.delta,
                    "shared_layers": d.shared_layers,
                    "layers_a": [x.__dict__ for x in d.a.layers[d.shared_layers :]],
                    "layers_b": [x.__dict__ for x in d.b.layers[d.shared_layers :]],
                    "paths": [c.__dict__ | {"delta": c.delta} for c in d.paths],
                },
                indent=2,
            )
        )
        return
    click.echo(
        f"{d.a.name}: {human_size(d.a.size)}  ->  {d.b.name}: {human_size(d.b.size)}  "
        f"({'+' if d.delta >= 0 else '-'}{human_size(abs(d.delta))})"
    )
    click.echo(f"{d.shared_layers} shared base layers")
    for label, rep in (("only in A", d.a), ("only in B", d.b)):
        for x in rep.layers[d.shared_layers :]:
            click.echo(
                f"  {label}: layer {x.index} {human_size(x.uncompressed or x.compressed)}"
                f"  {' '.join(x.created_by.split())[:60]}"
            )
    if d.paths:
        click.echo("")
        rows = [("CHANGE", "DELTA", "BEFORE", "AFTER", "PATH")]
        for c in d.paths[:top]:
            sign = "+" if c.delta >= 0 else "-"
            rows.append(
                (
                    c.change,
                    f"{sign}{human_size(abs(c.delta))}",
                    human_size(c.before),
                    human_size(c.after),
                    "/" + c.path,
                )
            )
        _table(rows, {1, 2, 3})
        if len(d.paths) > top:
            click.echo(f"... and {len(d.paths) - top} more paths (--top)")


@cli.command()
@click.argument("image")
@click.option("--max-size", help="Largest total size (e.g. 300MB; uncompressed).")
@click.option("--max-layer-size", help="Largest single layer (uncompressed).")
@click.option("--max-layers", type=int, help="Most layers.")
@click.option("--min-efficiency", type=float, help="Lowest efficiency (dive's score, 0..1).")
@click.option("--max-wasted", help="Most reclaimable bytes (overwritten or deleted).")
@click.option("--max-growth", help="Most growth against --baseline (5% or 20MB).")
@click.option("--baseline", help="The image to compare growth with.")
@click.option("--forbid", multiple=True, help="A path glob that must not be in the image.")
@click.option("--forbid-caches", is_flag=True, help="Forbid .git and package-manager caches.")
@click.option("--max-duplicate-bytes", help="Most bytes of files stored in several layers.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Rules file (default: ./.imgtool.toml when present).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the results as JSON (- for stdout).",
)
@click.option("--junit", type=click.Path(dir_okay=False), help="Write a JUnit XML report.")
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write a Markdown report (for a PR comment).",
)
@_source_options
@click.pass_context
def check(ctx: click.Context, image: str, **o: Any) -> None:
    """Check IMAGE against size rules: exit 0 when all hold, 1 when one fails, 2 on a usage
    or lookup error."""
    sys.exit(_check(ctx, image, o))  # its errors exit 2: the "gate" convention of cli/common.py


def _check(ctx: click.Context, image: str, o: dict[str, Any]) -> int:
    from imgtool import analyze, api

    path = Path(o["config_path"]) if o["config_path"] else Path(".imgtool.toml")
    rules, baseline_name = analyze.Rules(), None
    if o["config_path"] or path.exists():
        rules, baseline_name = analyze.load_rules(path)
    for key in ("max_size", "max_layer_size", "max_wasted", "max_duplicate_bytes"):
        if o[key] is not None:
            setattr(rules, key, analyze.parse_size(o[key]))
    if o["max_layers"] is not None:
        rules.max_layers = o["max_layers"]
    if o["min_efficiency"] is not None:
        rules.min_efficiency = o["min_efficiency"]
    if o["max_growth"] is not None:
        rules.max_growth = o["max_growth"]
    rules.forbid += list(o["forbid"])
    if o["forbid_caches"]:
        rules.forbid += list(analyze.CACHE_PRESET)
    baseline_name = o["baseline"] or baseline_name
    src = _Source(o["remote"], o["insecure"], o["platform"])
    r = src.report(ctx, image)
    base = src.report(ctx, baseline_name) if baseline_name else None
    results = api.check(r, rules, base)
    failed = any(x.status == "fail" for x in results)
    label = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "skip": "SKIP"}
    for x in results:
        click.echo(f"{label[x.status]}  {x.rule}: {x.message}")
    click.echo(
        f"{r.name}: {'FAILED' if failed else 'passed'} "
        f"({sum(x.status == 'fail' for x in results)} of {len(results)} rules failed)"
    )
    if o["json_path"]:
        doc = json.dumps(
            {
                "image": r.name,
                "passed": not failed,
                "results": [x.__dict__ for x in results],
                "report": r.to_dict(),
            },
            indent=2,
        )
        _write(o["json_path"], doc)
    if o["junit"]:
        _write(o["junit"], analyze.junit(r.name, results))
    if o["markdown"]:
        _write(o["markdown"], analyze.markdown(r.name, results, r))
    return EXIT_RULE_FAILED if failed else 0


def _write(path: str, text: str) -> None:
    if path == "-":
        click.echo(text)
    else:
        Path(path).write_text(text if text.endswith("\n") else text + "\n")
