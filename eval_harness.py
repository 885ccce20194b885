"""
Score checkpoints on targeted prompts: does the model know that Lily is a girl, that two apples and
one more make three, where the ball is? Quick evidence of what a model has learned, long before
its stories read well.

    python eval_harness.py --runs_dir out                         # every run in out/, latest checkpoint
    python eval_harness.py --runs baseline_s1 'gqa_*'             # some runs (names or globs)
    python eval_harness.py --checkpoint_step 2000                 # that step in every run (or: best)
    python eval_harness.py --prompts my_prompts.json --report_dir comparisons/my_eval
    python eval_harness.py --temperature 0.8 --top_k 40 --seed 1  # sample instead of greedy decoding

--runs_dir is also spelled --out_dir and --runs --run_names, as in compare.py. --checkpoint_step best
takes each run's checkpoints/ckpt_best.pt (its lowest val loss). Every run is encoded and decoded
with the tokenizer it was trained on (runs.load_run_model); a run whose tokenizer file is missing
or changed is skipped with the reason.

A prompt is one of two kinds (lm-evaluation-harness's generate_until and multiple_choice):
- generative: the model continues `prompt` (greedy by default, batched with the key/value cache);
  the continuation is cut at its first line break, then after its first sentence end, and it passes
  when any of `answers` matches it (`match`: contains (whole words), exact, prefix, regex).
- multiple choice (`choices` + `answer_index`): no text is generated; each choice is scored as the
  continuation " <choice>" by its summed log-probability (model.score) and the prompt passes when
  the most likely choice is the right one (acc). The length-normalised pick (acc_norm: log-prob per
  character of the choice) is reported beside it but awards no points.
Points: a passed prompt earns its `score`; weighted score = points earned / all points.

Seed groups: runs that differ only in their seed (runs.seed_groups, the grouping compare.py uses)
get accuracy and weighted score as mean ± std over their seeds (sample std, n - 1), beside the
per-run rows, which also show each run's status (completed, running, stale, failed, ...).

The prompt file is checked completely before any model loads; a bad one stops the script with one
line naming the prompt id and the problem. A run without checkpoints (or without --checkpoint_step)
is reported and skipped. Outputs in --report_dir (default comparisons/eval_harness): eval_results.csv,
summary_table.csv, summary_table.md (runs and seed groups), groups.csv, category_breakdown.csv,
difficulty_breakdown.csv, settings.json.
"""
import argparse
import csv
import fnmatch
import hashlib
import io
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from model import pick_device
from sample import check_settings
from runs import (RunError, add_run_args, atomic_write_json, atomic_write_text, find_runs, load_run_model,
                  parse_step, read_run, resolve_checkpoint, seed_groups)

DEFAULT_PROMPTS = 'eval/prompts_tinystories.json'
REQUIRED_KEYS = ('id', 'category', 'difficulty', 'score', 'prompt')
OPTIONAL_KEYS = ('answers', 'match', 'case_sensitive', 'choices', 'answer_index', 'note')
CHOICE_DELIMITER = ' '  # between prompt and choice, as lm-evaluation-harness's target_delimiter

# -----------------------------------------------------------------------------
# the prompt file


class PromptFileError(ValueError):
    """The prompt file is unusable; the message is one line naming the file and the prompt id."""


def load_prompts(path):
    """Read and check a prompt file ({"prompts": [...]}). Returns the list of prompt dicts with
    defaults filled in (match, case_sensitive). Raises PromptFileError on the first problem."""
    path = Path(path)
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except FileNotFoundError:
        raise PromptFileError(f"{path}: prompt file not found") from None
    except json.JSONDecodeError as e:
        raise PromptFileError(f"{path}: not valid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{path}: not UTF-8 text: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get('prompts'), list):
        raise PromptFileError(f'{path}: expected a JSON object {{"prompts": [...]}}')
    if not data['prompts']:
        raise PromptFileError(f"{path}: the prompts list is empty")
    prompts, seen = [], set()
    for i, item in enumerate(data['prompts']):
        if isinstance(item, dict) and isinstance(item.get('id'), str) and item['id'].strip():
            where = f"{path}: prompt {item['id']!r}"
        else:
            where = f"{path}: prompt #{i + 1} (no valid id)"

        def bad(problem):
            return PromptFileError(f"{where}: {problem}")

        if not isinstance(item, dict):
            raise bad(f"expected an object, got {type(item).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in item]
        if missing:
            raise bad(f"missing field(s) {', '.join(missing)}")
        unknown = sorted(set(item) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
        if unknown:
            raise bad(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")
        if not isinstance(item['id'], str) or not item['id'].strip():
            raise bad("id must be a non-empty string")
        if item['id'] in seen:
            raise bad("duplicate id (ids must be unique)")
        seen.add(item['id'])
        if not isinstance(item['category'], str) or not item['category'].strip():
            raise bad("category must be a non-empty string")
        if type(item['difficulty']) is not int or item['difficulty'] < 1:
            raise bad(f"difficulty must be a positive integer (1 = easy), got {item['difficulty']!r}")
        score = item['score']
        if type(score) not in (int, float) or not math.isfinite(score) or score <= 0:
            raise bad(f"score must be a positive number, got {score!r}")
        text = item['prompt']
        if not isinstance(text, str) or not text.strip():
            raise bad("prompt must be a non-empty string")
        if text != text.rstrip():
            # GPT-2 tokens carry their leading space (" girl"): a prompt ending in a space asks for
            # a token the model has almost never seen there
            raise bad("prompt ends with whitespace; end it at the last word (the model writes the space)")
        case_sensitive = item.get('case_sensitive', False)
        if not isinstance(case_sensitive, bool):
            raise bad(f"case_sensitive must be true or false, got {case_sensitive!r}")
        if 'choices' in item or 'answer_index' in item:
            prompts.append(dict(item, **_check_choices(item, bad)))
        else:
            prompts.append(dict(item, **_check_answers(item, bad)))
    return prompts


def _check_choices(item, bad):
    if 'choices' not in item or 'answer_index' not in item:
        raise bad("a multiple-choice prompt needs both choices and answer_index")
    for key in ('answers', 'match', 'case_sensitive'):
        if key in item:
            raise bad(f"{key} does not apply to a multiple-choice prompt (it is scored by choices/answer_index)")
    choices = item['choices']
    if not isinstance(choices, list) or len(choices) < 2:
        raise bad("choices must be a list of at least 2 strings")
    for c in choices:
        if not isinstance(c, str) or not c.strip():
            raise bad(f"every choice must be a non-empty string, got {c!r}")
        if c != c.strip():
            raise bad(f"choice {c!r} has surrounding whitespace (the harness puts one space before it)")
    if len({c.casefold() for c in choices}) != len(choices):
        raise bad("choices repeat (compared case-insensitively)")
    index = item['answer_index']
    if type(index) is not int or not 0 <= index < len(choices):
        raise bad(f"answer_index must be an integer in 0..{len(choices) - 1}, got {index!r}")
    return dict(type='choice', match='loglikelihood')


def _check_answers(item, bad):
    if 'answers' not in item:
        raise bad("missing field answers (or choices + answer_index for multiple choice)")
    answers = item['answers']
    if not isinstance(answers, list) or not answers:
        raise bad("answers must be a non-empty list of strings")
    for a in answers:
        if not isinstance(a, str) or not a.strip():
            raise bad(f"every answer must be a non-empty string, got {a!r}")
    match = item.get('match', 'contains')
    if match not in MATCH_TYPES:
        raise bad(f"unknown match {match!r}: expected one of {', '.join(MATCH_TYPES)}")
    if match == 'regex':
        for a in answers:
            try:
                re.compile(a)
            except re.error as e:
                raise bad(f"answer regex {a!r} does not compile: {e}") from None
    return dict(type='generate', match=match, case_sensitive=item.get('case_sensitive', False))

# -----------------------------------------------------------------------------
# cutting a completion and matching answers

# a run of . ! ? with any closing quotes/brackets, then whitespace or the end ("3.5" is not an end)
SENTENCE_END = re.compile(r'[.!?]+["\'\u201d\u2019)\]]*(?=\s|$)')
EDGE_PUNCTUATION = ' .,!?;:"\'()[]\u201c\u201d\u2018\u2019'


def cut_completion(text):
    """The part of a generated continuation that answers are matched against: leading spaces
    dropped, then cut at the first line break, then just after the first sentence end."""
    text = text.lstrip(' \t').split('\n', 1)[0]
    m = SENTENCE_END.search(text)
    return (text[:m.end()] if m else text).strip()


def _words_pattern(answer):
    """answer as a regex that only matches whole words: 'he' is not inside 'the', '3' not in '13'."""
    answer = ' '.join(answer.split())
    pattern = r'\s+'.join(re.escape(w) for w in answer.split(' '))
    if re.match(r'\w', answer):
        pattern = r'(?<!\w)' + pattern
    if re.search(r'\w$', answer):
        pattern += r'(?!\w)'
    return pattern


def _trim(text):
    """Whitespace collapsed, punctuation and quotes stripped at both ends: '"Cold!"' -> 'Cold'."""
    return ' '.join(text.split()).strip(EDGE_PUNCTUATION)


def match_contains(completion, answer, flags):
    """The answer occurs as whole words anywhere in the completion."""
    return re.search(_words_pattern(answer), completion, flags) is not None


def match_prefix(completion, answer, flags):
    """The completion (edge punctuation and quotes trimmed) starts with the answer's whole words."""
    return re.match(_words_pattern(answer), _trim(completion), flags) is not None


def match_exact(completion, answer, flags):
    """The completion is the answer, both trimmed of edge punctuation and quotes."""
    a, c = _trim(answer), _trim(completion)
    return a == c if not flags & re.IGNORECASE else a.casefold() == c.casefold()


def match_regex(completion, answer, flags):
    """The answer is a regular expression found anywhere in the completion (re.search)."""
    return re.search(answer, completion, flags) is not None


# a prompt's `match` -> the function that says whether one answer matches a (cut) completion
MATCHERS = {'contains': match_contains, 'exact': match_exact, 'prefix': match_prefix, 'regex': match_regex}
MATCH_TYPES = tuple(MATCHERS)


def answer_matches(completion, answer, match='contains', case_sensitive=False):
    """Does one answer match a (cut) completion? Case-insensitive unless case_sensitive."""
    if match not in MATCHERS:
        raise ValueError(f"unknown match {match!r}: expected one of {', '.join(MATCH_TYPES)}")
    return MATCHERS[match](completion, answer, 0 if case_sensitive else re.IGNORECASE)


def passes(prompt, completion):
    """A generative prompt passes when any of its answers matches the cut completion."""
    return any(answer_matches(completion, a, prompt['match'], prompt['case_sensitive']) for a in prompt['answers'])

# -----------------------------------------------------------------------------
# evaluating one model


def _batches(items, size):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def evaluate_model(model, tok, prompts, max_new_tokens=20, batch_size=64, temperature=0.0, top_k=None,
                   generator=None, progress=None):
    """One result dict per prompt (in file order). tok is the model's own tokenizer (prepare.Tokenizer:
    encode, decode, eot_token). Generative prompts are generated in batches of similar length (less
    padding); multiple-choice prompts are scored by model.score."""
    encoded = [tok.encode(p['prompt']) for p in prompts]
    results = [None] * len(prompts)
    gen = sorted((i for i, p in enumerate(prompts) if p['type'] == 'generate'), key=lambda i: len(encoded[i]))
    mc = sorted((i for i, p in enumerate(prompts) if p['type'] == 'choice'), key=lambda i: len(encoded[i]))

    for batch in _batches(gen, batch_size):
        new_tokens = model.generate([encoded[i] for i in batch], max_new_tokens, temperature=temperature,
                                    top_k=top_k, eot_token=tok.eot_token, generator=generator)
        for i, toks in zip(batch, new_tokens):
            generated = tok.decode(toks)
            completion = cut_completion(generated)
            results[i] = dict(generated=generated, completion=completion, passed=passes(prompts[i], completion))
        if progress is not None:
            progress.update(len(batch))

    # a batch is as many prompts as keep the (prompt, choice) pairs within batch_size (at least one)
    chunks, chunk, n_pairs = [], [], 0
    for i in mc:
        n = len(prompts[i]['choices'])
        if chunk and n_pairs + n > batch_size:
            chunks.append(chunk)
            chunk, n_pairs = [], 0
        chunk.append(i)
        n_pairs += n
    if chunk:
        chunks.append(chunk)
    for chunk in chunks:
        contexts, continuations = [], []
        for i in chunk:
            for c in prompts[i]['choices']:
                contexts.append(encoded[i])
                continuations.append(tok.encode(CHOICE_DELIMITER + c))
        logprobs, _ = model.score(contexts, continuations, batch_size=batch_size)
        k = 0
        for i in chunk:
            choices = prompts[i]['choices']
            lps = logprobs[k:k + len(choices)]
            k += len(choices)
            results[i] = choice_result(prompts[i], lps)
        if progress is not None:
            progress.update(len(chunk))
    return results


def choice_result(prompt, logprobs):
    """acc: the choice with the highest summed log-prob (first on ties) is the answer; acc_norm: the
    same with log-prob per character of the choice (lm-evaluation-harness's acc_norm)."""
    choices = prompt['choices']
    chosen = max(range(len(choices)), key=lambda j: logprobs[j])
    chosen_norm = max(range(len(choices)), key=lambda j: logprobs[j] / len(choices[j]))
    return dict(generated='', completion=choices[chosen], passed=chosen == prompt['answer_index'],
                chosen_index=chosen, choice_logprobs=logprobs,
                passed_norm=chosen_norm == prompt['answer_index'])

# -----------------------------------------------------------------------------
# tables


RESULT_COLUMNS = ['run', 'step', 'prompt_id', 'category', 'difficulty', 'score', 'type', 'match', 'expected',
                  'completion', 'passed', 'points', 'generated', 'choice_logprobs', 'chosen_index', 'answer_index',
                  'passed_norm']


def result_rows(run, step, prompts, results):
    """eval_results.csv rows for one evaluated checkpoint."""
    rows = []
    for p, r in zip(prompts, results):
        mc = p['type'] == 'choice'
        rows.append(dict(
            run=run, step=step, prompt_id=p['id'], category=p['category'], difficulty=p['difficulty'],
            score=p['score'], type=p['type'], match=p['match'],
            expected=p['choices'][p['answer_index']] if mc else ' | '.join(p['answers']),
            completion=r['completion'], passed=int(r['passed']), points=p['score'] if r['passed'] else 0,
            generated=r['generated'],
            choice_logprobs=';'.join(f'{lp:.4f}' for lp in r['choice_logprobs']) if mc else '',
            chosen_index=r['chosen_index'] if mc else '', answer_index=p['answer_index'] if mc else '',
            passed_norm=int(r['passed_norm']) if mc else ''))
    return rows


def summarize(rows, by=None):
    """Per (run, step[, by]) totals: prompts, passed, accuracy, points, max_points, weighted_score.
    Groups keep the order in which they first appear (runs in order; categories in file order)."""
    groups = {}
    for r in rows:
        key = (r['run'], r['step']) + ((r[by],) if by else ())
        groups.setdefault(key, []).append(r)
    keys = list(groups)
    if by == 'difficulty':  # numeric order within each run
        first = {}
        for k in keys:
            first.setdefault(k[:2], len(first))
        keys.sort(key=lambda k: (first[k[:2]], k[2]))
    out = []
    for key in keys:
        g = groups[key]
        n, passed = len(g), sum(r['passed'] for r in g)
        points, max_points = sum(r['points'] for r in g), sum(r['score'] for r in g)
        row = dict(run=key[0], step=key[1])
        if by:
            row[by] = key[2]
        row.update(prompts=n, passed=passed, accuracy=passed / n, points=points, max_points=max_points,
                   weighted_score=points / max_points)
        out.append(row)
    return out


def summary_rows(rows, run_info):
    """summary_table rows: the overall totals plus the accuracy's standard error, and accuracy on
    each kind of prompt (generative; multiple choice by acc and by acc_norm). run_info: {run:
    dict(model_name, status, group)}, what the table shows of each run beside its scores."""
    out = []
    for s in summarize(rows):
        g = [r for r in rows if (r['run'], r['step']) == (s['run'], s['step'])]
        gen = [r for r in g if r['type'] == 'generate']
        mc = [r for r in g if r['type'] == 'choice']
        n, acc = s['prompts'], s['accuracy']
        info = run_info.get(s['run'], {})
        out.append(dict(
            run=s['run'], model_name=info.get('model_name', ''), group=info.get('group', ''), step=s['step'],
            status=info.get('status', ''), prompts=n, passed=s['passed'],
            accuracy=acc, accuracy_stderr=math.sqrt(acc * (1 - acc) / (n - 1)) if n > 1 else math.nan,
            weighted_score=s['weighted_score'], points=s['points'], max_points=s['max_points'],
            generate_accuracy=sum(r['passed'] for r in gen) / len(gen) if gen else math.nan,
            choice_accuracy=sum(r['passed'] for r in mc) / len(mc) if mc else math.nan,
            choice_acc_norm=sum(r['passed_norm'] for r in mc) / len(mc) if mc else math.nan))
    return out


def group_rows(summary, groups):
    """groups.csv rows: per seed group (runs.seed_groups), accuracy and weighted score as mean and
    std over its evaluated runs (sample std, n - 1; nan for a single run), and the steps measured."""
    out = []
    for group in groups:
        names = {r['name'] for r in group['runs']}
        members = [s for s in summary if s['run'] in names]
        if not members:
            continue
        row = dict(group=group['label'], model_name=group['model_name'],
                   runs=' '.join(s['run'] for s in members), n=len(members),
                   steps=' '.join(dict.fromkeys(str(s['step']) for s in members)))
        for key in ('accuracy', 'weighted_score'):
            values = [s[key] for s in members]
            row[f'{key}_mean'] = statistics.fmean(values)
            row[f'{key}_std'] = statistics.stdev(values) if len(values) > 1 else math.nan
        out.append(row)
    return out


def _fmt(v):
    if isinstance(v, float):
        return '' if math.isnan(v) else (str(int(v)) if v.is_integer() and abs(v) < 1e15 else f'{v:.4f}')
    return v


def csv_text(rows, columns):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator='\n')
    writer.writeheader()
    for r in rows:
        writer.writerow({c: _fmt(r[c]) for c in columns})
    return buf.getvalue()


def _pct(v):
    return '' if math.isnan(v) else f'{100 * v:.1f}%'


def markdown_table(summary, groups, settings):
    lines = [f"# Prompt eval: {settings['prompts_file']} ({settings['n_prompts']} prompts, "
             f"{settings['n_multiple_choice']} multiple choice)", '',
             f"Decoding: {settings['decoding']}, max_new_tokens={settings['max_new_tokens']}. "
             "Multiple choice awards points by acc; acc_norm is shown for reference.", '',
             '| run | model | step | status | accuracy | weighted score | prompts | generative acc | MC acc '
             '| MC acc_norm |',
             '|---|---|---:|---|---:|---:|---:|---:|---:|---:|']
    for s in summary:
        lines.append(f"| {s['run']} | {s['model_name']} | {s['step']} | {s['status']} | "
                     f"{_pct(s['accuracy'])} \u00b1 {_pct(s['accuracy_stderr']).rstrip('%')} | {_pct(s['weighted_score'])} | "
                     f"{s['prompts']} | {_pct(s['generate_accuracy'])} | {_pct(s['choice_accuracy'])} | "
                     f"{_pct(s['choice_acc_norm'])} |")
    lines += ['', '## Seed groups', '',
              'Runs that differ only in their seed; mean \u00b1 std over the seeds (percentage points, '
              'sample std).', '',
              '| group | runs | n | step | accuracy | weighted score |', '|---|---|---:|---|---:|---:|']

    def spread(g, key):
        if g['n'] == 1:
            return f"{_pct(g[key + '_mean'])} (1 run)"
        return f"{_pct(g[key + '_mean'])} \u00b1 {100 * g[key + '_std']:.1f}"
    for g in groups:
        lines.append(f"| {g['group']} | {g['runs']} | {g['n']} | {g['steps']} | {spread(g, 'accuracy')} | "
                     f"{spread(g, 'weighted_score')} |")
    return '\n'.join(lines) + '\n'

# -----------------------------------------------------------------------------
# evaluating checkpoints and writing the report


def select_checkpoints(runs_dir, patterns, step):
    """([(run_dir, step label, checkpoint path)], [(run name, reason)]): the checkpoint of each run
    to evaluate (step None = newest, an int, 'best'), and the runs skipped with the reason."""
    found = find_runs(runs_dir, patterns)
    skipped = []
    for name in patterns or []:
        if not any(fnmatch.fnmatchcase(r.name, name) for r in found):
            skipped.append((name, f"no run folder {Path(runs_dir) / name} (with config.json and metrics.csv)"))
    chosen = []
    for run_dir in found:
        try:
            label, path = resolve_checkpoint(run_dir, step)
        except RunError as e:  # its message starts with the run's name, which the caller prints first
            skipped.append((run_dir.name, str(e).removeprefix(f"{run_dir.name}: ")))
            continue
        chosen.append((run_dir, label, path))
    return chosen, skipped


def evaluate_checkpoint(run_dir, step, prompts, device, max_new_tokens=20, batch_size=64, temperature=0.0,
                        top_k=None, seed=1337):
    """Load one run's checkpoint with the run's own tokenizer and score it on every prompt. Returns
    (eval_results rows, an entry for settings.json). Raises ValueError (one line) when the checkpoint,
    its tokenizer or its context length rule it out."""
    model, ckpt, tok, label = load_run_model(run_dir, step, device)
    cfg = model.config
    if max_new_tokens >= cfg.block_size:
        raise ValueError(f"--max_new_tokens={max_new_tokens} needs a block_size above it "
                         f"(this model: {cfg.block_size})")
    too_long = []
    for p in prompts:
        needed = len(tok.encode(p['prompt'])) + (max_new_tokens if p['type'] == 'generate' else 0)
        if needed > cfg.block_size:
            too_long.append(p['id'])
    if too_long:
        named = ', '.join(too_long[:5]) + (', ...' if len(too_long) > 5 else '')
        print(f"warning: {run_dir.name}: {len(too_long)} prompt(s) longer than block_size={cfg.block_size} "
              f"allows keep only their last tokens ({named})")
    generator = None
    if temperature > 0:  # reset for every checkpoint: each run sees the same random stream
        generator = torch.Generator(device=device).manual_seed(seed)
    t0 = time.perf_counter()
    with tqdm(total=len(prompts), desc=f"{run_dir.name}@{label}", unit='prompt', file=sys.stderr) as bar:
        results = evaluate_model(model, tok, prompts, max_new_tokens, batch_size, temperature, top_k,
                                 generator, progress=bar)
    entry = dict(run=run_dir.name, step=label, model_name=cfg.model_name, iter_num=ckpt.get('iter_num'),
                 tokenizer=tok.name, tokenizer_sha256=tok.sha256, eval_s=round(time.perf_counter() - t0, 3))
    return result_rows(run_dir.name, label, prompts, results), entry


SUMMARY_COLUMNS = ['run', 'model_name', 'group', 'step', 'status', 'prompts', 'passed', 'accuracy',
                   'accuracy_stderr', 'weighted_score', 'points', 'max_points', 'generate_accuracy',
                   'choice_accuracy', 'choice_acc_norm']
GROUP_COLUMNS = ['group', 'model_name', 'runs', 'n', 'steps', 'accuracy_mean', 'accuracy_std',
                 'weighted_score_mean', 'weighted_score_std']
BREAKDOWN_TOTALS = ['prompts', 'passed', 'accuracy', 'points', 'max_points', 'weighted_score']


def check_report_dir(report_dir):
    """A one-line reason why report_dir cannot be written, or None. Checked before the slow part;
    creates nothing."""
    folder = existing = Path(report_dir)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"--report_dir {folder}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--report_dir {folder}: {existing} is not writable (permission denied); choose another folder"
    return None


def write_report(report_dir, rows, summary, groups, settings):
    """Every output file, each written atomically."""
    report = Path(report_dir)
    report.mkdir(parents=True, exist_ok=True)
    atomic_write_text(report / 'eval_results.csv', csv_text(rows, RESULT_COLUMNS))
    atomic_write_text(report / 'summary_table.csv', csv_text(summary, SUMMARY_COLUMNS))
    atomic_write_text(report / 'groups.csv', csv_text(groups, GROUP_COLUMNS))
    atomic_write_text(report / 'summary_table.md', markdown_table(summary, groups, settings))
    atomic_write_text(report / 'category_breakdown.csv',
                      csv_text(summarize(rows, 'category'), ['run', 'step', 'category'] + BREAKDOWN_TOTALS))
    atomic_write_text(report / 'difficulty_breakdown.csv',
                      csv_text(summarize(rows, 'difficulty'), ['run', 'step', 'difficulty'] + BREAKDOWN_TOTALS))
    atomic_write_json(report / 'settings.json', settings)

# -----------------------------------------------------------------------------
# command line


def fail(message):
    sys.exit(f"eval_harness.py: error: {message}")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument('--checkpoint_step', type=parse_step, default=None, metavar='N|best',
                    help="this step's checkpoint, or best (lowest val loss); default: each run's latest")
    ap.add_argument('--prompts', default=DEFAULT_PROMPTS, help=f'prompt file (default: {DEFAULT_PROMPTS})')
    ap.add_argument('--report_dir', default='comparisons/eval_harness', help='where the tables go')
    ap.add_argument('--max_new_tokens', type=int, default=20, help='tokens generated per prompt (default: 20)')
    ap.add_argument('--batch_size', type=int, default=64, help='prompts (or prompt+choice pairs) per forward pass')
    ap.add_argument('--device', default='auto', help='auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps')
    ap.add_argument('--temperature', type=float, default=0.0, help='0 = greedy (default); > 0 samples')
    ap.add_argument('--top_k', type=int, default=None, help='sample from the k most likely tokens only')
    ap.add_argument('--seed', type=int, default=1337, help='sampling seed (reset for every checkpoint)')
    ap.error = fail  # one line and exit 1, not a usage dump
    args = ap.parse_args(argv)
    if args.batch_size < 1:
        fail(f"--batch_size={args.batch_size}: expected at least 1")
    try:
        check_settings(args.max_new_tokens, args.temperature, args.top_k)  # sample.py's, the same words
    except ValueError as e:
        fail(e)
    return args


def main(argv=None):
    args = parse_args(argv)
    try:  # everything that can be checked before a model loads
        prompts = load_prompts(args.prompts)
        device = pick_device(args.device)
        chosen, skipped = select_checkpoints(args.runs_dir, args.runs, args.checkpoint_step)
    except ValueError as e:  # PromptFileError, RunError, a device this machine lacks
        fail(e)
    for name, reason in skipped:
        print(f"skipped {name}: {reason}")
    if not chosen:
        wanted = f" matching {' '.join(args.runs)}" if args.runs else ''
        fail(f"nothing to evaluate: no run{wanted} in {args.runs_dir} has a usable checkpoint "
             "(train.py writes out/<run_name>/checkpoints/ckpt_<iter>.pt)")
    problem = check_report_dir(args.report_dir)
    if problem:
        fail(problem)

    decoding = ('greedy' if args.temperature == 0 else
                f'sampling (temperature={args.temperature}, top_k={args.top_k}, seed={args.seed})')
    if args.temperature == 0 and args.top_k is not None:
        print("note: --top_k has no effect with greedy decoding (--temperature 0)")
    n_mc = sum(p['type'] == 'choice' for p in prompts)
    print(f"{len(prompts)} prompts ({n_mc} multiple choice) from {args.prompts}; {decoding}; device {device}")

    rows, evaluated, loaded, run_info = [], [], [], {}
    for run_dir, step, path in chosen:
        try:
            run = read_run(run_dir)
            run_rows, entry = evaluate_checkpoint(run_dir, step, prompts, device, args.max_new_tokens,
                                                  args.batch_size, args.temperature, args.top_k, args.seed)
        except ValueError as e:  # RunError, CheckpointError, DataError (a missing or changed tokenizer file)
            skipped.append((run_dir.name, str(e)))
            print(f"skipped {run_dir.name}: {e}")
            continue
        rows += run_rows
        loaded.append(run)
        evaluated.append(dict(entry, checkpoint=str(path), status=run['status']))
        run_info[run_dir.name] = dict(model_name=entry['model_name'], status=run['status'])
    if not evaluated:
        fail("nothing was evaluated: every selected checkpoint was skipped (see above)")

    groups = seed_groups(loaded)
    for group in groups:
        for run in group['runs']:
            run_info[run['name']]['group'] = group['label']
    summary = summary_rows(rows, run_info)
    group_summary = group_rows(summary, groups)
    settings = dict(
        prompts_file=str(args.prompts), prompts_sha256=hashlib.sha256(Path(args.prompts).read_bytes()).hexdigest(),
        n_prompts=len(prompts), n_multiple_choice=n_mc, decoding=decoding, temperature=args.temperature,
        top_k=args.top_k, seed=args.seed if args.temperature > 0 else None, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, device=device, torch_version=torch.__version__,
        checkpoint_step=args.checkpoint_step if args.checkpoint_step is not None else 'latest',
        completion_cut='leading spaces dropped, cut at the first line break, then after the first sentence end (. ! ?)',
        multiple_choice_points='acc (highest summed log-prob of " <choice>"); acc_norm reported only',
        group_spread='std over the seeds of a group (sample std, n - 1)',
        evaluated=evaluated, skipped=[dict(run=n, reason=r) for n, r in skipped],
        created=time.strftime('%Y-%m-%dT%H:%M:%S%z'))
    try:
        write_report(args.report_dir, rows, summary, group_summary, settings)
    except OSError as e:  # disk full, permissions, a file where the folder should be
        fail(f"--report_dir {args.report_dir}: cannot write {e.filename or 'the report'}: {e.strerror or e}")

    print()
    print(markdown_table(summary, group_summary, settings))
    print(f"wrote eval_results.csv, summary_table.csv/.md, groups.csv, category_breakdown.csv, "
          f"difficulty_breakdown.csv, settings.json to {args.report_dir}")


if __name__ == '__main__':
    main()
