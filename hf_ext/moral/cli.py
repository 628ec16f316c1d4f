"""``hf-ext moral score|eval|fit``: moral scores from a sentence encoder (std-lib imports only here).

Out of the box (offline) it uses the direction fitted on the bundled all-MiniLM-L6-v2 that ships with hf_ext;
``--model`` fits (once, then cached) a direction for any sentence-transformers model path or Hub id.

Example:
    hf-ext moral score "kill people" "smile at my friend" --templates
    hf-ext moral score "Someone was cruel." --json
    hf-ext moral eval --out runs/moral            # user-study r, MFQ foundations, PNG plots
    hf-ext moral score "töten" --model sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2 --language de
"""

from __future__ import annotations

import argparse
import json

from hf_ext.utils import cli
from hf_ext.utils.deprecation import warn_deprecated
from hf_ext.utils.logging import get_logger

logger = get_logger(__name__)

_LANGUAGES = ("en", "ar", "cs", "de", "zh")


def _common(p: argparse.ArgumentParser, **out) -> None:
    cli.add_common_options(p, model="sentence-transformers model path or Hub id (default: the bundled all-MiniLM-L6-v2 "
                                    "and its shipped direction); a new model's direction is fitted once and cached",
                           device="cpu", json=True, progress=True, **out)
    p.add_argument("--language", default="en", choices=_LANGUAGES,
                   help="language of the fit questions (non-English: the shipped translated questions)")
    p.add_argument("--direction", type=cli.existing_path, default=None, help="a saved direction (folder or .json) to use instead of fitting")
    p.add_argument("--cache-dir", default=None, help="where fitted directions are cached (default ~/.cache/hf_ext/moral)")
    p.add_argument("--refit", action="store_true", help="fit again even if a cached direction exists")
    p.add_argument("--batch-size", type=cli.positive_int, default=None, help="texts per encoder call (default: the encoder's)")


def add_commands(actions) -> None:
    """MoralDirection (Schramowski et al. 2022; Hämmerl et al. 2023): score texts on the moral direction of a
    sentence encoder, evaluate it, fit it.

    Sub-commands: ``score``, ``eval``, ``fit``.
    """
    s = cli.add_command(actions, "score", _cmd_score, help="score texts (offline by default)",
                        description="Print the moral score of each TEXT (unclipped; the fit verbs lie in [-1, 1]).")
    s.add_argument("texts", nargs="+", metavar="TEXT", help="a text to score (several: one score each)")
    s.add_argument("--templates", action="store_true",
                   help="treat each TEXT as an action phrase and average its 10 question templates (as in the user study)")
    _common(s)

    e = cli.add_command(actions, "eval", _cmd_eval, help="user-study correlation and MFQ foundations, with plots",
                        description="Correlate with the user study (Pearson r, dos/don'ts), score the MFQ and write plots.")
    e.add_argument("--study", default="globalAMT", choices=["globalAMT", "regional"],
                   help="which user study to correlate with (default: %(default)s)")
    e.add_argument("--variant", default="templates", choices=["templates", "raw"],
                   help="templates: mean of the 10 question templates (the paper's MD); raw: the participants' question")
    e.add_argument("--mfq-file", type=cli.existing_path, default=None, help="CSV with MFQ statements in --language (required for non-English MFQ)")
    e.add_argument("--human", default=None, help="human MFQ reference for the bar plot: us, cs, zh or de")
    _common(e, out="moral_eval", out_help="results.json and the PNG plots")

    f = cli.add_command(actions, "fit", _cmd_fit, help="fit and save a direction for --model",
                        description="Fit the moral direction of --model in --language and save it (JSON + safetensors).")
    _common(f, out=cli.REQUIRED, out_help="the direction (moral_direction.json + .safetensors); a .json path, the pre-0.2 "
                                      "form, is still accepted")


def _direction(args: argparse.Namespace):
    from hf_ext.moral.cache import cached_direction
    from hf_ext.moral.direction import MoralDirection

    if args.direction:
        return MoralDirection.load(args.direction, encoder=args.model or "bundled", device=args.device)
    if args.model is None and args.language != "en":
        raise ValueError(f"the bundled all-MiniLM-L6-v2 is English-only: pass --model <multilingual encoder> for "
                         f"--language {args.language}")
    return cached_direction(args.model or "bundled", args.language, cache_dir=args.cache_dir, device=args.device,
                            refit=args.refit, progress=not args.no_progress)


def _cmd_score(args: argparse.Namespace) -> int:
    md = _direction(args)
    scores = md.score(args.texts, use_templates=args.templates, batch_size=args.batch_size)
    width = min(60, max(len(t) for t in args.texts))
    cli.print_result({"encoder": md.encoder_name, "language": md.language, "use_templates": args.templates,
                      "scores": [{"text": t, "score": float(s)} for t, s in zip(args.texts, scores)]},
                     "\n".join(f"{s:+.4f}  {t:<{width}}" for t, s in zip(args.texts, scores)), as_json=args.json)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_ext.moral import evaluation, mfq

    md = _direction(args)
    us = evaluation.user_study_correlation(md, args.study, variant=args.variant, batch_size=args.batch_size,
                                           progress=not args.no_progress)
    if args.mfq_file:
        statements = mfq.load_statements(args.mfq_file, args.language)
    elif md.language == "en":
        statements = None
    else:
        statements = False
    mfq_res = mfq.score_mfq(md, statements, batch_size=args.batch_size) if statements is not False else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = ("r", "p", "n", "r_dos", "p_dos", "n_dos", "r_donts", "p_donts", "n_donts", "study", "language", "variant",
            "missing")
    result = {"encoder": md.encoder_name, "language": md.language, "user_study": {k: us[k] for k in keys}}
    evaluation.plot_user_study(us, out / "user_study.png")
    evaluation.plot_pc1(md, out / "pc1_actions.png", us["actions"], embeddings=us["embeddings"],
                        title=f"user-study actions on the moral direction of {md.encoder_name} ({md.language})")
    lines = [f"{md.encoder_name} ({md.language}), {args.study}: Pearson r = {us['r']:.4f} (n = {us['n']}, "
             f"p = {us['p']:.2e}); dos r = {us['r_dos']:.3f} (n = {us['n_dos']}), don'ts r = {us['r_donts']:.3f} "
             f"(n = {us['n_donts']})"]
    if mfq_res is not None:
        result["mfq"] = {"foundations": mfq_res["foundations"], "items": mfq_res["items"]}
        human = args.human or {"en": "us", "cs": "cs", "zh": "zh", "de": "de"}.get(md.language)
        evaluation.plot_mfq(mfq_res["foundations"], out / "mfq_foundations.png", human=human)
        lines.append("MFQ foundations: " + ", ".join(f"{k} {v:+.3f}" for k, v in mfq_res["foundations"].items()))
    else:
        lines.append(f"MFQ skipped: the {md.language!r} MFQ statements are not shipped (licence); pass --mfq-file")
    (out / "results.json").write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    lines.append(f"wrote {out / 'results.json'} and plots in {out}")
    cli.print_result(result, "\n".join(lines), as_json=args.json)
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from hf_ext.moral.direction import MoralDirection

    md = MoralDirection.fit(args.model or "bundled", args.language, device=args.device, batch_size=args.batch_size,
                            progress=not args.no_progress)
    if args.out.lower().endswith(".json"):
        warn_deprecated(f"--out {args.out} (a file)", "--out FOLDER", category=FutureWarning)
    path = md.save(args.out)
    scores = dict(zip(md.fit_phrases, md.fit_scores))
    result = {"path": str(path), "encoder": md.encoder_name, "language": md.language,
              "fit_scores": {k: float(v) for k, v in scores.items()},
              "explained_variance_ratio_pc1": float(md.explained_variance_ratio[0])}
    cli.print_result(result, f"wrote {path}: {md!r}; kill {scores['kill']:+.3f}, smile "
                             f"{scores.get('smile', float('nan')):+.3f}, PC1 explains "
                             f"{100 * md.explained_variance_ratio[0]:.1f} % of the fit set's variance", as_json=args.json)
    return 0
