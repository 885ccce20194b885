"""
Evaluate checkpoints beyond one loss number: targeted prompts (does the model know that Lily is a
girl, that two apples and one more make three?) and the probes of probes.py, which tell
architectures apart where multiple-choice accuracy sits near chance: loss past the training context
(length), in-context copying (copy) and what the model writes (generation).

    python eval_harness.py --runs_dir out                         # every run in out/, latest checkpoint
    python eval_harness.py --runs baseline_s1 'gqa_*'             # some runs (names or globs)
    python eval_harness.py --probes length,copy                   # some probes (default: all four)
    python eval_harness.py --checkpoint_step 2000                 # that step in every run (or: best)
    python eval_harness.py --prompts my_prompts.json --report_dir comparisons/my_eval
    python eval_harness.py --temperature 0.8 --top_k 40 --seed 1  # sample the prompts instead of greedy

--runs_dir is also spelled --out_dir and --runs --run_names, as in compare.py. --checkpoint_step best
takes each run's checkpoints/ckpt_best.pt (its lowest val loss). Every run is encoded and decoded
with the tokenizer it was trained on (runs.load_run_model); a run whose tokenizer file is missing
or changed is skipped with the reason. --probes picks from length, copy, generation, prompts (all
by default: each takes seconds per run on a CPU; BENCHMARKS.md has the costs).

A prompt is one of two kinds (lm-evaluation-harness's generate_until and multiple_choice):
- generative: the model continues `prompt` (greedy by default, batched with the key/value cache);
  the continuation is cut at its first line break, then after its first sentence end, and it passes
  when any of `answers` matches it (`match`: contains (whole words), exact, prefix, regex).
- multiple choice (`choices` + `answer_index`): no text is generated; each choice is scored as the
  continuation " <choice>" by its summed log-probability (model.score) and the prompt passes when
  the most likely choice is the right one (acc). The length-normalised pick (acc_norm: log-prob per
  character of the choice) is reported beside it but awards no points.
Points: a passed prompt earns its `score`; weighted score = points earned / all points.

Every probe returns named numbers per run (prompts: accuracy, weighted_score, ...). Seed groups
(runs.seed_groups, the grouping compare.py uses) get the statistics compare.py gives val loss, from
stats.py, on every number: the group's mean, its difference from the baseline group (--baseline,
else model_name baseline) with a 95% interval (paired by seed, else Welch, else one run against the
other side's spread), Holm-adjusted over the groups of that number, and a verdict.

The prompt file is checked completely before any model loads; a bad one stops the script with one
line naming the prompt id and the problem. A run without checkpoints (or without --checkpoint_step)
is reported and skipped; a probe a run cannot take says why in its status. Outputs in --report_dir
(default comparisons/eval_harness): report.html (per probe the groups' means with intervals and
verdicts, the length plot, the stories), groups.csv (every number of every seed group), probes.csv
(every number of every run), length_positions.csv, length.png, generations.csv, settings.json, and
for the prompts eval_results.csv, summary_table.csv/.md, category_breakdown.csv, difficulty_breakdown.csv.
"""
import argparse
import csv
import fnmatch
import hashlib
import html
import io
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import probes
import stats
from generate import check_settings
from model import pick_device
from prepare import read_stories, sample_files
from runs import (RunError, add_run_args, atomic_write_bytes, atomic_write_text, baselines_by_size, find_runs,
                  ladder_baseline, load_run_model, parse_step, pick_baseline, read_run, references,
                  resolve_checkpoint, seed_groups, size_label)

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


def group_statistics(groups, numbers, baseline, by_size=None):
    """groups.csv rows: for every number (prompts.accuracy, length.loss_0-1x, ...) and seed group, its
    mean and std over the group's runs and its difference from the baseline group (by_size: on a ladder,
    runs.baselines_by_size, the baseline of its own size) with the interval, p-value and verdict of
    stats.py, as compare.py judges val loss. numbers: {run: {number: value}}; a seed that appears twice in
    a group counts once (a rerun is the same replicate). Holm's adjustment runs over the groups of one
    number, as compare.py's over the groups of its metric."""
    _, reference_of, is_base = references(groups, baseline, by_size)
    reference = [reference_of(g) for g in groups]
    position = {id(g): i for i, g in enumerate(groups)}
    names = list(dict.fromkeys(k for values in numbers.values() for k in values))
    rows = []
    for name in names:
        by_seed = []
        for g in groups:
            values = {}
            for r in g['runs']:
                v = numbers.get(r['name'], {}).get(name)
                if v is not None and math.isfinite(v):
                    values.setdefault(r['config'].get('seed'), v)
            by_seed.append(values)
        base_values = [by_seed[position[id(ref)]] if ref is not None else None for ref in reference]
        results = [stats.compare_values(v, b) if b is not None else None for v, b in zip(by_seed, base_values)]
        p_holm = stats.holm([r['p'] if r else None for r in results])
        for g, values, r, ph, ref, base in zip(groups, by_seed, results, p_holm, reference, base_values):
            d = stats.describe(values.values())
            at = f" at {size_label(g['runs'][0]['config'])}" if by_size else ''
            if is_base(g):
                verdict = f'baseline{at}' if values else f'baseline{at}: no value'
            elif ref is None:
                verdict = f'no baseline group{at}'
            elif not values:
                verdict = 'no value (see the probe status)'
            elif not base:
                verdict = 'the baseline has no value'
            else:
                verdict = stats.verdict(r, ph, what=name)
            r = r or {}
            rows.append(dict(number=name, group=g['label'], model_name=g['model_name'],
                             runs=' '.join(x['name'] for x in g['runs'] if x['name'] in numbers), n=d['n'],
                             mean=d['mean'], std=d['std'], compared_with=ref['label'] if ref is not None else '',
                             diff_vs_baseline=r.get('diff'), ci95_low=r.get('low'),
                             ci95_high=r.get('high'), method=r.get('method', ''), p_value=r.get('p'),
                             p_holm=ph, verdict=verdict))
    return rows


def _fmt(v):
    if isinstance(v, float):
        return '' if math.isnan(v) else (str(int(v)) if v.is_integer() and abs(v) < 1e15 else f'{v:.6g}')
    return v


def csv_text(rows, columns):
    # CRLF line ends (the csv module's default): Python 3.11 quotes a field holding a line end only if it
    # is in lineterminator, and a generated text can hold a lone '\r'
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator='\r\n')
    writer.writeheader()
    for r in rows:
        writer.writerow({c: _fmt(r[c]) for c in columns})
    return buf.getvalue()


def _pct(v):
    return '' if math.isnan(v) else f'{100 * v:.1f}%'


def _num(v, digits=4):
    return '' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.{digits}f}'


def markdown_table(summary, stat_rows, settings):
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
              'Runs that differ only in their seed: the mean over the seeds and the difference from their '
              'baseline group (on a ladder, the baseline of their own size) with its 95% interval and verdict '
              '(stats.py, as compare.py).', '',
              '| number | group | runs | n | mean | diff vs baseline | 95% interval | verdict |',
              '|---|---|---|---:|---:|---:|---|---|']
    for g in stat_rows:
        if g['number'] in ('prompts.accuracy', 'prompts.weighted_score'):
            interval = f"{_num(g['ci95_low'])} .. {_num(g['ci95_high'])}" if g['ci95_low'] is not None else ''
            lines.append(f"| {g['number']} | {g['group']} | {g['runs']} | {g['n']} | {_num(g['mean'])} | "
                         f"{_num(g['diff_vs_baseline'])} | {interval} | {g['verdict']} |")
    return '\n'.join(lines) + '\n'

# -----------------------------------------------------------------------------
# the probes: one function each (probes.py), the prompt file as one more


def probe_prompts(model, tok, data, settings):
    """The prompt file (data['prompts']) as a probe: accuracy, weighted score and accuracy by kind of
    prompt; detail: each prompt's result (eval_results.csv) and a warning about cut prompts."""
    prompts, max_new_tokens = data['prompts'], settings['max_new_tokens']
    block_size = model.config.block_size  # generation past it keeps the last block_size tokens (model.generate)
    too_long = [p['id'] for p in prompts if len(tok.encode(p['prompt'])) +
                (max_new_tokens if p['type'] == 'generate' else 0) > block_size]
    warning = None
    if too_long:
        named = ', '.join(too_long[:5]) + (', ...' if len(too_long) > 5 else '')
        warning = (f"{len(too_long)} prompt(s) longer than block_size={block_size} allows keep only their "
                   f"last tokens ({named})")
    generator = None
    if settings['prompt_temperature'] > 0:  # reset for every checkpoint: each run sees the same random stream
        generator = torch.Generator(device=probes.model_device(model)).manual_seed(settings['seed'])
    results = evaluate_model(model, tok, prompts, max_new_tokens, settings['batch_size'],
                             settings['prompt_temperature'], settings['prompt_top_k'], generator)
    [s] = summary_rows(result_rows('', '', prompts, results), {})
    keys = ('accuracy', 'weighted_score', 'generate_accuracy', 'choice_accuracy', 'choice_acc_norm')
    return {k: s[k] for k in keys}, dict(results=results, warning=warning)


PROBES = dict(probes.PROBES, prompts=probe_prompts)


def parse_probes(text):
    """--probes' value: names from PROBES, comma-separated (argparse type)."""
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in PROBES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected some of {','.join(PROBES)} (comma-separated)")
    return list(dict.fromkeys(names))

# -----------------------------------------------------------------------------
# evaluating checkpoints


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


def evaluate_checkpoint(run_dir, step, names, data, settings, device):
    """Load one run's checkpoint with the run's own tokenizer and run the probes `names` on it. Returns
    ({probe: dict(numbers, detail, seconds, status)}, an entry for settings.json). A probe the run
    cannot take (a context too short for it) gets its reason as status and no numbers. Raises
    ValueError (one line) when the checkpoint or its tokenizer rule the run out."""
    model, ckpt, tok, label = load_run_model(run_dir, step, device)
    results = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            numbers, detail = PROBES[name](model, tok, data, settings)
            status = detail.get('status') or 'ok'
        except ValueError as e:
            numbers, detail, status = {}, {}, f'not run: {e}'
        seconds = round(time.perf_counter() - t0, 3)
        results[name] = dict(numbers=numbers, detail=detail, seconds=seconds, status=status)
        print(f"{run_dir.name}@{label}: {name} {seconds:.1f}s" + ('' if status == 'ok' else f" ({status})"))
        if detail.get('warning'):
            print(f"warning: {run_dir.name}: {detail['warning']}")
    cfg = model.config
    entry = dict(run=run_dir.name, step=label, model_name=cfg.model_name, iter_num=ckpt.get('iter_num'),
                 block_size=cfg.block_size, tokenizer=tok.name, tokenizer_sha256=tok.sha256,
                 probe_s={n: r['seconds'] for n, r in results.items()},
                 probe_status={n: r['status'] for n, r in results.items()})
    return results, entry

# -----------------------------------------------------------------------------
# the report: tables, the length plot, the page


SUMMARY_COLUMNS = ['run', 'model_name', 'group', 'step', 'status', 'prompts', 'passed', 'accuracy',
                   'accuracy_stderr', 'weighted_score', 'points', 'max_points', 'generate_accuracy',
                   'choice_accuracy', 'choice_acc_norm']
GROUP_COLUMNS = ['number', 'group', 'model_name', 'runs', 'n', 'mean', 'std', 'compared_with', 'diff_vs_baseline', 'ci95_low',
                 'ci95_high', 'method', 'p_value', 'p_holm', 'verdict']
BREAKDOWN_TOTALS = ['prompts', 'passed', 'accuracy', 'points', 'max_points', 'weighted_score']
PROBE_COLUMNS = ['run', 'model_name', 'group', 'step', 'probe', 'number', 'value', 'probe_status']
POSITION_COLUMNS = ['run', 'group', 'context', 'start', 'end', 'loss', 'bpb']
STORY_COLUMNS = ['run', 'group', 'decoding', 'opening', 'text', 'tokens', 'ended']


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


def length_figure(curves):
    """Loss and bits per byte by position (bucket middles). curves: {group label: [(context, positions
    of one run)]}; each group is the mean of its runs with a min-max band, dotted lines mark each
    training context and its multiples. PNG bytes, or None without any curve."""
    curves = {label: found for label, found in curves.items() if found}
    if not curves:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, (label, found) in enumerate(curves.items()):
        n = min(len(positions) for _, positions in found)  # a run that stopped at its context is shorter
        x = np.array([(p['start'] + p['end'] - 1) / 2 for p in found[0][1][:n]])
        for ax, key in zip(axes, ('loss', 'bpb')):
            y = np.array([[p[key] for p in positions[:n]] for _, positions in found])
            ax.plot(x, y.mean(0), color=f'C{i % 10}', lw=2, marker='o', ms=3, label=f'{label} (n={len(found)})')
            if len(found) > 1:
                ax.fill_between(x, y.min(0), y.max(0), color=f'C{i % 10}', alpha=0.2, lw=0)
    longest = max(p['end'] for found in curves.values() for _, positions in found for p in positions)
    contexts = sorted({context for found in curves.values() for context, _ in found})
    for ax, what in zip(axes, ('val loss (nats/token)', 'val bits per byte')):
        for context in contexts:
            for edge in range(context, longest, context):
                ax.axvline(edge, color='grey', ls=':', lw=1)
        ax.set_xlabel('position (tokens); dotted: multiples of the training context')
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle('Loss by position on whole validation stories concatenated past the training context')
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100)
    plt.close(fig)
    return buf.getvalue()


def probe_markdown(stat_rows, probe):
    """The seed groups' means of one probe's numbers, for the console (report.html has the intervals)."""
    mine = [r for r in stat_rows if r['number'].startswith(probe + '.')]
    numbers = list(dict.fromkeys(r['number'] for r in mine))
    mean = {(r['group'], r['number']): r['mean'] for r in mine}
    table = [['group'] + [n.split('.', 1)[1] for n in numbers], ['---'] + ['---:'] * len(numbers)]
    table += [[g] + [_num(mean[g, n]) for n in numbers] for g in dict.fromkeys(r['group'] for r in mine)]
    return f"## {probe} (seed-group means)\n\n" + ''.join(f"| {' | '.join(row)} |\n" for row in table)


def html_table(rows, columns):
    head = ''.join(f'<th>{html.escape(c)}</th>' for c in columns)
    body = ''.join('<tr>' + ''.join(f'<td>{html.escape(str(_fmt(r.get(c, ""))))}</td>' for c in columns) + '</tr>'
                   for r in rows)
    return f'<table><tr>{head}</tr>{body}</table>'


def probe_table_html(stat_rows, probe):
    """One row per seed group, one column per number of the probe: the group's mean and, below it, the
    difference from the baseline with its 95% interval and the verdict."""
    mine = [r for r in stat_rows if r['number'].startswith(probe + '.')]
    numbers = list(dict.fromkeys(r['number'] for r in mine))
    groups = list(dict.fromkeys(r['group'] for r in mine))
    cell = {(r['group'], r['number']): r for r in mine}
    head = '<th>group (n)</th>' + ''.join(f'<th>{html.escape(n.split(".", 1)[1])}</th>' for n in numbers)
    body = ''
    for g in groups:
        n = max(cell[g, x]['n'] for x in numbers)
        body += f'<tr><td>{html.escape(g)} ({n})</td>'
        for x in numbers:
            r = cell[g, x]
            diff = ''
            if r['diff_vs_baseline'] is not None:
                interval = (f" [{r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}]" if r['ci95_low'] is not None else '')
                diff = f"\u0394 {r['diff_vs_baseline']:+.4f}{interval}<br>"
            body += (f"<td><b>{_num(r['mean'])}</b><br><small>{diff}{html.escape(r['verdict'])}</small></td>")
        body += '</tr>'
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def stories_html(story_rows, groups):
    """The generation probe's stories of each group's first run, next to each other: bold opening,
    then the continuation; greedy first, then sampled."""
    shown = {}
    for r in story_rows:
        shown.setdefault(r['group'], r['run'])
    keys = list(dict.fromkeys((r['decoding'], r['opening']) for r in story_rows))
    text = {(r['run'], r['decoding'], r['opening']): r for r in story_rows}
    labels = [g['label'] for g in groups if g['label'] in shown]
    head = '<th>decoding</th>' + ''.join(f'<th>{html.escape(g)}<br><small>{html.escape(shown[g])}</small></th>'
                                         for g in labels)
    body = ''
    for decoding, opening in keys:
        body += f'<tr><td>{decoding}</td>'
        for g in labels:
            r = text[shown[g], decoding, opening]
            end = ' <i>[end of text]</i>' if r['ended'] else ' <i>[cut]</i>'
            body += f"<td class='story'><b>{html.escape(opening)}</b>{html.escape(r['text'])}{end}</td>"
        body += '</tr>'
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


STYLE = ('body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}'
         'td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}'
         'th{background:#f3f3f3}.story{max-width:380px;white-space:pre-wrap}.scroll{overflow-x:auto}'
         'img{max-width:100%}')
PROBE_NOTES = {
    'length': "Mean loss (nats per token) and bits per byte in each length band, on whole validation stories "
              "concatenated to {longest} times the training context; a variant that cannot run past its context "
              "(a learned position table) says so in its status and has no value beyond 1x.",
    'copy': "In-context copying: distinct random tokens repeated (random), and inserted into a validation story "
            "and repeated later (story). acc and loss on the first copy (a guess) and on the second (predictable "
            "only by copying from the first).",
    'generation': "Fixed story openings continued greedily and sampled (temperature {temperature}, top_k {top_k}, "
                  "seed {seed}): mean_words, rep4 (share of repeated word 4-grams), distinct1/2, eot_share (share "
                  "ending with end-of-text) and self_loss (the run's own loss on what it wrote, nats per token).",
    'prompts': "The prompt file: accuracy, weighted score, generative and multiple-choice accuracy "
               "(summary_table.md has each run).",
}


def report_html(runs_dir, groups, baseline_label, probe_rows, stat_rows, story_rows, settings, has_plot):
    """report.html: per probe the seed groups' means with differences, intervals and verdicts, the length
    plot, the stories; then every run's probe status and the full statistics table."""
    names = settings['probes']
    probe_settings = settings['probe_settings']
    notes = {k: v.format(longest=max(probe_settings['length_multiples']), **probe_settings)
             for k, v in PROBE_NOTES.items()}
    parts = [f"<h1>Probes: {html.escape(str(runs_dir))}</h1>",
             f"<p>Baseline: <b>{html.escape(baseline_label)}</b>. Each cell: the seed group's mean; below it "
             "the difference from its baseline group (compared_with; on a ladder, the baseline of its own size) "
             "with its 95% interval and the verdict (stats.py, the "
             "statistics compare.py uses: paired by seed where the seeds match, else Welch; Holm-adjusted "
             "over the groups of each number). Files: groups.csv (every number), probes.csv (every run).</p>"]
    for name in names:
        parts.append(f"<h2>{name}</h2><p>{html.escape(notes[name])}</p>")
        if name == 'length' and has_plot:
            parts.append('<img src="length.png" alt="loss by position">')
        parts.append(probe_table_html(stat_rows, name))
        # a run that could not take the probe, or (length) how far each run went
        said = sorted({(r['run'], r['probe_status']) for r in probe_rows
                       if r['probe'] == name and r['probe_status'] != 'ok'})
        if said:
            parts.append('<ul>' + ''.join(f'<li>{html.escape(f"{run}: {st}")}</li>' for run, st in said) + '</ul>')
        if name == 'generation' and story_rows:
            parts.append(stories_html(story_rows, groups))
    status = {}
    for r in probe_rows:
        status.setdefault((r['run'], r['group'], r['step']), {})[r['probe']] = r['probe_status']
    run_rows = [dict(run=run, group=group, step=step, **st) for (run, group, step), st in status.items()]
    parts += ['<h2>Runs</h2><p>Each probe\'s status per run (ok, or why it has no value).</p>',
              html_table(run_rows, ['run', 'group', 'step'] + names),
              '<h2>All statistics</h2>', f'<div class="scroll">{html_table(stat_rows, GROUP_COLUMNS)}</div>']
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Probes</title><style>{STYLE}</style>"
            f"</head><body>{''.join(parts)}</body></html>")


def write_report(report_dir, files):
    """Every output file ({name: text or bytes}), each written atomically."""
    report = Path(report_dir)
    report.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (atomic_write_bytes if isinstance(content, bytes) else atomic_write_text)(report / name, content)

def collect(probed, group_of, prompts):
    """The per-run results of every probe as the report's rows: ({run: {number: value}}, probes.csv
    rows, length_positions.csv rows, generations.csv rows, {group: [(context, positions)]} for the
    length plot, eval_results.csv rows)."""
    numbers, probe_rows, position_rows, story_rows, curves, rows = {}, [], [], [], {}, []
    for entry, results in probed:
        run = entry['run']
        common = dict(run=run, model_name=entry['model_name'], group=group_of[run], step=entry['step'])
        numbers[run] = {f'{p}.{k}': v for p, r in results.items() for k, v in r['numbers'].items()}
        for p, r in results.items():
            if not r['numbers']:
                probe_rows.append(dict(common, probe=p, number='', value=None, probe_status=r['status']))
            probe_rows += [dict(common, probe=p, number=f'{p}.{k}', value=v, probe_status=r['status'])
                           for k, v in r['numbers'].items()]
        length = results.get('length', {}).get('detail')
        if length:
            position_rows += [dict(run=run, group=group_of[run], context=length['context'], **p)
                              for p in length['positions']]
            curves.setdefault(group_of[run], []).append((length['context'], length['positions']))
        story_rows += [dict(run=run, group=group_of[run], **s)
                       for s in results.get('generation', {}).get('detail', {}).get('stories', [])]
        if results.get('prompts', {}).get('numbers'):
            rows += result_rows(run, entry['step'], prompts, results['prompts']['detail']['results'])
    return numbers, probe_rows, position_rows, story_rows, curves, rows


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
    ap.add_argument('--probes', type=parse_probes, default=list(PROBES), metavar='NAME,...',
                    help=f"which probes to run (default: all, {','.join(PROBES)})")
    ap.add_argument('--baseline', default=None, help="the seed group (its label, or a run name or glob of its "
                    "runs) the others are compared with, as in compare.py (default: model_name baseline, on a "
                    "ladder its group at each size, else the first group)")
    ap.add_argument('--prompts', default=DEFAULT_PROMPTS, help=f'prompt file (default: {DEFAULT_PROMPTS})')
    ap.add_argument('--stories', default=None, help='validation stories for the length and copy probes '
                    '(.txt/.jsonl/.json, as prepare.py reads; default: the bundled sample\'s validation split)')
    ap.add_argument('--report_dir', default='comparisons/eval_harness', help='where the tables go')
    ap.add_argument('--max_new_tokens', type=int, default=20, help='tokens generated per prompt (default: 20)')
    ap.add_argument('--batch_size', type=int, default=64, help='prompts (or prompt+choice pairs) per forward pass')
    ap.add_argument('--device', default='auto', help='auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps')
    ap.add_argument('--temperature', type=float, default=0.0, help='prompts: 0 = greedy (default); > 0 samples')
    ap.add_argument('--top_k', type=int, default=None, help='prompts: sample from the k most likely tokens only')
    ap.add_argument('--seed', type=int, default=1337, help='sampling seed (reset for every checkpoint) and the '
                    "probes' random tokens")
    for key in ('length_sequences', 'copy_sequences', 'generation_tokens'):
        ap.add_argument(f'--{key}', type=int, default=probes.DEFAULT_SETTINGS[key],
                        help=f'(default: {probes.DEFAULT_SETTINGS[key]})')
    ap.error = fail  # one line and exit 1, not a usage dump
    args = ap.parse_args(argv)
    if args.batch_size < 1:
        fail(f"--batch_size={args.batch_size}: expected at least 1")
    for key in ('length_sequences', 'copy_sequences', 'generation_tokens'):
        if getattr(args, key) < 1:
            fail(f"--{key}={getattr(args, key)}: expected at least 1")
    try:
        check_settings(args.max_new_tokens, args.temperature, args.top_k)  # sample.py's, the same words
    except ValueError as e:
        fail(e)
    return args


def read_data(args):
    """What the probes read: the prompt file (checked completely) and the validation stories."""
    data = {}
    if 'prompts' in args.probes:
        data['prompts'] = load_prompts(args.prompts)
    if {'length', 'copy'} & set(args.probes):
        path = Path(args.stories) if args.stories else sample_files()['val']
        if not path.is_file():
            raise ValueError(f"--stories {path}: file not found")
        data['stories'] = list(read_stories(path))
        if not data['stories']:
            raise ValueError(f"--stories {path}: no stories in it")
    return data


def main(argv=None):
    args = parse_args(argv)
    try:  # everything that can be checked before a model loads
        data = read_data(args)
        device = pick_device(args.device)
        chosen, skipped = select_checkpoints(args.runs_dir, args.runs, args.checkpoint_step)
    except ValueError as e:  # PromptFileError, RunError, DataError, a device this machine lacks
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
    prompts = data.get('prompts', [])
    n_mc = sum(p['type'] == 'choice' for p in prompts)
    if prompts:
        print(f"{len(prompts)} prompts ({n_mc} multiple choice) from {args.prompts}; {decoding}")
    print(f"probes: {', '.join(args.probes)}; device {device}")
    settings = dict(probes.DEFAULT_SETTINGS, seed=args.seed, max_new_tokens=args.max_new_tokens,
                    batch_size=args.batch_size, prompt_temperature=args.temperature, prompt_top_k=args.top_k,
                    **{k: getattr(args, k) for k in ('length_sequences', 'copy_sequences', 'generation_tokens')})

    probed, evaluated, loaded = [], [], []
    for run_dir, step, path in chosen:
        try:
            run = read_run(run_dir)
            results, entry = evaluate_checkpoint(run_dir, step, args.probes, data, settings, device)
        except ValueError as e:  # RunError, CheckpointError, DataError (a missing or changed tokenizer file)
            skipped.append((run_dir.name, str(e)))
            print(f"skipped {run_dir.name}: {e}")
            continue
        loaded.append(run)
        probed.append((entry, results))
        evaluated.append(dict(entry, checkpoint=str(path), status=run['status']))
    if not evaluated:
        fail("nothing was evaluated: every selected checkpoint was skipped (see above)")

    groups = seed_groups(loaded)
    group_of = {r['name']: g['label'] for g in groups for r in g['runs']}
    try:
        baseline, why = pick_baseline(groups, args.baseline)
    except ValueError as e:
        fail(e)
    status = {r['name']: r['status'] for r in loaded}
    numbers, probe_rows, position_rows, story_rows, curves, rows = collect(probed, group_of, prompts)
    curves = {g['label']: curves.get(g['label'], []) for g in groups}
    by_size = None if args.baseline else baselines_by_size(groups, baseline)
    baseline_label = baseline['label']
    if by_size:
        baseline_label, why = ladder_baseline(groups, baseline)
    stat_rows = group_statistics(groups, numbers, baseline, by_size)

    run_settings = dict(
        probes=args.probes, baseline=baseline_label, baseline_chosen_by=why, decoding=decoding,
        temperature=args.temperature,
        top_k=args.top_k, seed=args.seed, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        device=device, torch_version=torch.__version__, stories=str(args.stories or sample_files()['val']),
        checkpoint_step=args.checkpoint_step if args.checkpoint_step is not None else 'latest',
        probe_settings={k: settings[k] for k in probes.DEFAULT_SETTINGS},
        group_statistics='stats.compare_values per number (paired by seed, else Welch, else one run against '
                         'the other side\'s spread); Holm over the groups of each number',
        evaluated=evaluated, skipped=[dict(run=n, reason=r) for n, r in skipped],
        created=time.strftime('%Y-%m-%dT%H:%M:%S%z'))
    files = {'probes.csv': csv_text(probe_rows, PROBE_COLUMNS), 'groups.csv': csv_text(stat_rows, GROUP_COLUMNS)}
    if prompts:
        run_settings.update(
            prompts_file=str(args.prompts), prompts_sha256=hashlib.sha256(Path(args.prompts).read_bytes()).hexdigest(),
            n_prompts=len(prompts), n_multiple_choice=n_mc,
            completion_cut='leading spaces dropped, cut at the first line break, then after the first sentence end',
            multiple_choice_points='acc (highest summed log-prob of " <choice>"); acc_norm reported only')
        run_info = {e['run']: dict(model_name=e['model_name'], status=status[e['run']], group=group_of[e['run']])
                    for e, _ in probed}
        summary = summary_rows(rows, run_info)
        files['eval_results.csv'] = csv_text(rows, RESULT_COLUMNS)
        files['summary_table.csv'] = csv_text(summary, SUMMARY_COLUMNS)
        files['summary_table.md'] = markdown_table(summary, stat_rows, run_settings)
        for by in ('category', 'difficulty'):
            files[f'{by}_breakdown.csv'] = csv_text(summarize(rows, by), ['run', 'step', by] + BREAKDOWN_TOTALS)
    if position_rows:
        files['length_positions.csv'] = csv_text(position_rows, POSITION_COLUMNS)
    plot = length_figure(curves)
    if plot:
        files['length.png'] = plot
    if story_rows:
        files['generations.csv'] = csv_text(story_rows, STORY_COLUMNS)
    files['report.html'] = report_html(args.runs_dir, groups, baseline_label, probe_rows, stat_rows, story_rows,
                                       run_settings, plot is not None)
    files['settings.json'] = json.dumps(run_settings, indent=2, default=str) + '\n'
    try:
        write_report(args.report_dir, files)
    except OSError as e:  # disk full, permissions, a file where the folder should be
        fail(f"--report_dir {args.report_dir}: cannot write {e.filename or 'the report'}: {e.strerror or e}")

    print()
    if prompts:
        print(files['summary_table.md'])
    for name in args.probes:
        if name != 'prompts':
            print(probe_markdown(stat_rows, name))
    print(f"wrote {', '.join(files)} to {args.report_dir} (open report.html)")


if __name__ == '__main__':
    main()
