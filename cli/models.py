"""`sar-cloud-removal models`: the installed models, each with its spec and its card's headline.

The headline is the card's line that starts with `Headline:` (models/weights/<name>.md), so the
figures a user sees here are the ones the card states and cites; a model without a card says so
rather than showing nothing.
"""
from ..core.errors import UserError
from ..core.model_spec import (DEFAULT_MODEL, card_headline, list_models, load_spec,
                               resolve_model)


def model_rows() -> list:
    """One dict per installed model: name, version, architecture, backends, headline."""
    rows = []
    for name in list_models():
        files = resolve_model(name)
        try:
            spec = load_spec(files)
            version, architecture = spec.version, spec.architecture
        except UserError as exc:    # a damaged install is listed, not hidden
            version, architecture = "?", f"unreadable ({exc})"
        first = files.paths[0]
        rows.append({"name": name, "default": name == DEFAULT_MODEL, "version": version,
                     "architecture": architecture,
                     "files": "+".join(p.suffix[1:] for p in files.paths),
                     "headline": card_headline(first.with_suffix(".md"))})
    return rows


def add_arguments(parser) -> None:
    parser.add_argument("--names", action="store_true",
                        help="print only the names, one per line (for scripts)")


def run(args) -> int:
    rows = model_rows()
    if not rows:
        raise UserError("No model is installed; reinstall the package (models/weights/ is "
                        "empty).")
    if args.names:
        print("\n".join(row["name"] for row in rows))
        return 0
    for row in rows:
        mark = " (default)" if row["default"] else ""
        print(f"{row['name']}{mark}  {row['version']}  {row['architecture']}  [{row['files']}]")
        print(f"    {row['headline']}")
    return 0
