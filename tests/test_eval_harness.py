"""eval_harness.py: cutting and every match type, scoring and breakdowns by hand, the multiple-choice
path, batched generation against one prompt at a time, each bad prompt file, skipped runs, the best
checkpoint, seed-group aggregation by hand, run status, each run's own tokenizer, an unwritable report
folder, the shipped prompt file, and an end-to-end run on real smoke-trained checkpoints."""
import collections
import json
import math
import shutil
import socket

import pytest

import eval_harness as eh
import runs
from conftest import (EOT_TEXT, REPO, SHIPPED, dead_pid, light_copy, make_checkpoint_run, read_csv, run_script,
                      tiny_model, write_prompts)
from runs import load_checkpoint
from tokenizer import load_tokenizer

OUTPUTS = ['eval_results.csv', 'summary_table.csv', 'summary_table.md', 'groups.csv', 'category_breakdown.csv',
           'difficulty_breakdown.csv', 'settings.json']


GEN = dict(id='g1', category='gender', difficulty=1, score=1, prompt='Tom is a boy. Lily is a', answers=['girl'])
MC = dict(id='m1', category='opposites', difficulty=2, score=2, prompt='The sun is hot, but the snow is',
          choices=['cold', 'hot'], answer_index=0)

# -----------------------------------------------------------------------------
# cutting and matching


@pytest.mark.parametrize('generated, cut', [
    (' girl. She likes to play.', 'girl.'),
    (' girl and a boy\nThe end.', 'girl and a boy'),
    ('\n\nOnce upon a time.', ''),                              # a new paragraph is no answer
    (' "Yes!" said Tom. Then he ran.', '"Yes!"'),
    (' 3.5 apples. Then more.', '3.5 apples.'),                # a decimal point is no sentence end
    (' happy... and sad', 'happy...'),
    (' no end at all', 'no end at all'),
])
def test_cut_completion(generated, cut):
    assert eh.cut_completion(generated) == cut


@pytest.mark.parametrize('completion, answer, expected', [
    ('then he ran home.', 'he', True),
    ('the dog ran.', 'he', False),                             # not inside "the"
    ('she has 13 cats.', '3', False),                          # not inside "13"
    ('she has 3 cats.', '3', True),
    ('Lily is a GIRL.', 'girl', True),                         # case-insensitive by default
    ('girls are here.', 'girl', False),
    ('an ice   cream cone', 'ice cream', True),               # any whitespace between the words
    ("Tom's ball", "Tom's", True),
    ('he is 5!', '5!', True),                                  # answers may end in punctuation
])
def test_contains_matches_whole_words(completion, answer, expected):
    assert eh.answer_matches(completion, answer, 'contains') is expected


def test_case_sensitive_applies_to_every_match_type():
    for match in ('contains', 'prefix', 'exact', 'regex'):
        assert eh.answer_matches('Jake.', 'jake', match) is True
        assert eh.answer_matches('Jake.', 'jake', match, case_sensitive=True) is False
        assert eh.answer_matches('Jake.', 'Jake', match, case_sensitive=True) is True


def test_exact_prefix_and_regex():
    assert eh.answer_matches('"Cold!"', 'cold', 'exact')             # edge quotes and punctuation trimmed
    assert not eh.answer_matches('cold and wet.', 'cold', 'exact')
    assert eh.answer_matches('five, six, seven.', 'five', 'prefix')
    assert not eh.answer_matches('fives are fun.', 'five', 'prefix')  # whole word
    assert not eh.answer_matches('then five.', 'five', 'prefix')
    assert eh.answer_matches('"Hop," said the frog.', 'Hop', 'prefix')  # an opening quote is skipped
    assert eh.answer_matches('only one cookie.', r'^(just |only )?(one|1)\b', 'regex')
    assert not eh.answer_matches('no cookie, not one.', r'^(just |only )?(one|1)\b', 'regex')
    assert not eh.answer_matches('13 cats', r'^3', 'regex')
    prompt = dict(GEN, answers=['woman', 'lady'], match='contains', case_sensitive=False)
    assert eh.passes(prompt, 'a nice lady.') and not eh.passes(prompt, 'a man.')

# -----------------------------------------------------------------------------
# scoring by hand


def test_weighted_score_and_breakdowns_by_hand():
    prompts = [dict(id='a', category='x', difficulty=1, score=1, type='generate', match='contains', answers=['a']),
               dict(id='b', category='x', difficulty=2, score=2, type='generate', match='contains', answers=['b']),
               dict(id='c', category='y', difficulty=3, score=3, type='choice', match='loglikelihood',
                    choices=['p', 'q'], answer_index=1),
               dict(id='d', category='y', difficulty=1, score=4, type='choice', match='loglikelihood',
                    choices=['p', 'q'], answer_index=0)]
    results = [dict(generated=' a.', completion='a.', passed=True),
               dict(generated=' z.', completion='z.', passed=False),
               eh.choice_result(prompts[2], [-5.0, -1.0]),   # q: right
               eh.choice_result(prompts[3], [-3.0, -2.0])]   # q: wrong
    rows = eh.result_rows('r1', 30, prompts, results)
    assert [r['points'] for r in rows] == [1, 0, 3, 0]
    assert rows[2]['choice_logprobs'] == '-5.0000;-1.0000' and rows[2]['completion'] == 'q'
    summary = eh.summary_rows(rows, {'r1': dict(model_name='baseline', status='completed')})
    assert len(summary) == 1
    s = summary[0]
    assert (s['model_name'], s['status']) == ('baseline', 'completed')
    assert (s['prompts'], s['passed'], s['points'], s['max_points']) == (4, 2, 4, 10)
    assert s['accuracy'] == 0.5 and s['weighted_score'] == pytest.approx(0.4)
    assert s['accuracy_stderr'] == pytest.approx(math.sqrt(0.25 / 3))
    assert s['generate_accuracy'] == 0.5 and s['choice_accuracy'] == 0.5
    cats = {r['category']: r for r in eh.summarize(rows, 'category')}
    assert (cats['x']['passed'], cats['x']['points'], cats['x']['max_points']) == (1, 1, 3)
    assert cats['x']['weighted_score'] == pytest.approx(1 / 3)
    assert (cats['y']['passed'], cats['y']['points'], cats['y']['max_points']) == (1, 3, 7)
    diffs = eh.summarize(rows, 'difficulty')
    assert [(d['difficulty'], d['prompts'], d['passed'], d['points'], d['max_points']) for d in diffs] == \
        [(1, 2, 1, 1, 5), (2, 1, 0, 0, 2), (3, 1, 1, 3, 3)]

# -----------------------------------------------------------------------------
# the multiple-choice path


class StubScorer:
    """model.score stand-in: a fixed log-prob per continuation text."""

    def __init__(self, tok, logprob_of):
        self.tok, self.logprob_of, self.calls = tok, logprob_of, []

    def score(self, prompts, continuations, batch_size=32):
        self.calls.append(len(prompts))
        return [self.logprob_of[self.tok.decode(c)] for c in continuations], [False] * len(prompts)


def test_choice_picks_highest_loglikelihood_and_acc_norm_divides_by_length():
    tok = load_tokenizer()
    prompt = dict(MC, choices=['cold', 'freezing'], answer_index=1, type='choice', match='loglikelihood')
    # sum: 'cold' (-4) beats 'freezing' (-6); per character 'freezing' (-0.75) beats 'cold' (-1.0)
    stub = StubScorer(tok, {' cold': -4.0, ' freezing': -6.0})
    [r] = eh.evaluate_model(stub, tok, [prompt], batch_size=8)
    assert (r['chosen_index'], r['completion'], r['passed'], r['passed_norm']) == (0, 'cold', False, True)
    stub = StubScorer(tok, {' cold': -7.0, ' freezing': -6.0})
    [r] = eh.evaluate_model(stub, tok, [prompt], batch_size=8)
    assert (r['chosen_index'], r['passed']) == (1, True)


def test_choice_batches_keep_pairs_within_batch_size():
    tok = load_tokenizer()
    prompts = [dict(MC, id=f'm{i}', choices=['a', 'b', 'c'], answer_index=i % 3, type='choice',
                    match='loglikelihood') for i in range(5)]
    stub = StubScorer(tok, {' a': -3.0, ' b': -1.0, ' c': -2.0})
    results = eh.evaluate_model(stub, tok, prompts, batch_size=7)
    assert stub.calls == [6, 6, 3]
    assert [r['passed'] for r in results] == [False, True, False, False, True]


def test_choice_agrees_with_model_score_on_a_real_model():
    tok = load_tokenizer()
    model = tiny_model(3)
    prompts = [dict(p, type='choice', match='loglikelihood') for p in eh.load_prompts(
        SHIPPED) if p['type'] == 'choice'][:12]
    results = eh.evaluate_model(model, tok, prompts, batch_size=5)
    for p, r in zip(prompts, results):
        lps, _ = model.score([tok.encode(p['prompt'])] * len(p['choices']),
                             [tok.encode(' ' + c) for c in p['choices']], batch_size=1)
        assert r['chosen_index'] == max(range(len(lps)), key=lambda j: lps[j])
        assert r['choice_logprobs'] == pytest.approx(lps, abs=1e-4)

# -----------------------------------------------------------------------------
# generation


def test_batched_generation_returns_each_prompts_own_greedy_completion():
    """Prompts are sorted by length and batched; every result must still be that prompt's own."""
    tok = load_tokenizer()
    model = tiny_model(5)
    prompts = [p for p in eh.load_prompts(SHIPPED) if p['type'] == 'generate'][:10]
    results = eh.evaluate_model(model, tok, prompts, max_new_tokens=6, batch_size=4)
    for p, r in zip(prompts, results):
        [alone] = model.generate([tok.encode(p['prompt'])], 6, eot_token=tok.eot_token)
        assert r['generated'] == tok.decode(alone)
        assert r['completion'] == eh.cut_completion(r['generated'])

# -----------------------------------------------------------------------------
# bad prompt files: one line naming the prompt id, before any model loads


BAD_FILES = [
    ('not json', '{"prompts": [', 'not valid JSON'),
    ('not the shape', '[1, 2]', 'expected a JSON object {"prompts": [...]}'),
    ('empty', '{"prompts": []}', 'the prompts list is empty'),
    ('missing field', [{k: v for k, v in GEN.items() if k != 'category'}], "prompt 'g1': missing field(s) category"),
    ('no answers', [{k: v for k, v in GEN.items() if k != 'answers'}], "prompt 'g1': missing field answers"),
    ('empty answers', [dict(GEN, answers=[])], "prompt 'g1': answers must be a non-empty list"),
    ('blank answer', [dict(GEN, answers=[' '])], "prompt 'g1': every answer must be a non-empty string"),
    ('unknown match', [dict(GEN, match='fuzzy')], "prompt 'g1': unknown match 'fuzzy'"),
    ('bad regex', [dict(GEN, match='regex', answers=['(girl'])], "prompt 'g1': answer regex '(girl' does not compile"),
    ('duplicate id', [GEN, dict(GEN, prompt='Lily is a girl. Tom is a')], "prompt 'g1': duplicate id"),
    ('no id', [{k: v for k, v in GEN.items() if k != 'id'}], 'prompt #1 (no valid id): missing field(s) id'),
    ('bad difficulty', [dict(GEN, difficulty='hard')], "prompt 'g1': difficulty must be a positive integer"),
    ('bad score', [dict(GEN, score=0)], "prompt 'g1': score must be a positive number"),
    ('trailing space', [dict(GEN, prompt='Lily is a ')], "prompt 'g1': prompt ends with whitespace"),
    ('unknown field', [dict(GEN, answer='girl')], "prompt 'g1': unknown field(s) answer"),
    ('index out of range', [dict(MC, answer_index=2)], "prompt 'm1': answer_index must be an integer in 0..1, got 2"),
    ('one choice', [dict(MC, choices=['cold'])], "prompt 'm1': choices must be a list of at least 2 strings"),
    ('no index', [{k: v for k, v in MC.items() if k != 'answer_index'}],
     "prompt 'm1': a multiple-choice prompt needs both"),
    ('repeated choice', [dict(MC, choices=['cold', 'Cold'])], "prompt 'm1': choices repeat"),
    ('mc with answers', [dict(MC, answers=['cold'])],
     "prompt 'm1': answers does not apply to a multiple-choice prompt"),
]


@pytest.mark.parametrize('content, message', [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_prompt_file_is_one_line_before_any_model_loads(tmp_path, monkeypatch, content, message):
    out = tmp_path / 'out'
    make_checkpoint_run(out, 'run_a', [10])
    path = tmp_path / 'prompts.json'
    if isinstance(content, str):
        path.write_text(content)
    else:
        write_prompts(path, content)

    def no_load(*a, **k):
        raise AssertionError('a model was loaded before the prompt file was checked')
    monkeypatch.setattr(eh, 'load_run_model', no_load)
    with pytest.raises(SystemExit) as exc:
        eh.main(['--out_dir', str(out), '--probes', 'prompts', '--prompts', str(path), '--report_dir', str(tmp_path / 'report')])
    text = str(exc.value.code)
    assert text.startswith('eval_harness.py: error: ') and '\n' not in text and str(path) in text
    assert message in text
    assert not (tmp_path / 'report').exists()


def test_bad_prompt_file_from_the_command_line(tmp_path):
    path = write_prompts(tmp_path / 'p.json', [GEN, dict(MC, id='m7', answer_index=5)])
    proc = run_script(REPO / 'eval_harness.py', '--out_dir', tmp_path / 'nowhere', '--prompts', path, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "prompt 'm7'" in lines[0] and 'answer_index' in lines[0]

# -----------------------------------------------------------------------------
# runs: skipped with a reason, the others evaluated


def test_runs_without_checkpoints_or_the_step_are_skipped(tmp_path, capsys):
    out = tmp_path / 'out'
    make_checkpoint_run(out, 'a_both', [10, 20])
    make_checkpoint_run(out, 'b_none', [])
    make_checkpoint_run(out, 'c_only10', [10])
    prompts = write_prompts(tmp_path / 'p.json', [GEN, MC])
    report = tmp_path / 'report'
    eh.main(['--out_dir', str(out), '--probes', 'prompts', '--prompts', str(prompts), '--report_dir', str(report),
             '--checkpoint_step', '20', '--run_names', 'a_*', 'b_none', 'c_only10', 'd_missing', 'z_*',
             '--max_new_tokens', '4', '--device', 'cpu'])
    stdout = capsys.readouterr().out
    assert 'skipped b_none: no checkpoints in' in stdout
    assert 'skipped c_only10: no checkpoint at step 20 (has 10)' in stdout
    assert 'skipped d_missing: no run folder' in stdout and 'skipped z_*: no run folder' in stdout
    rows = read_csv(report / 'eval_results.csv')
    assert [(r['run'], r['step'], r['prompt_id']) for r in rows] == [('a_both', '20', 'g1'), ('a_both', '20', 'm1')]
    settings = json.loads((report / 'settings.json').read_text())
    assert [e['run'] for e in settings['evaluated']] == ['a_both']
    assert {s['run'] for s in settings['skipped']} == {'b_none', 'c_only10', 'd_missing', 'z_*'}
    assert settings['decoding'] == 'greedy' and settings['max_new_tokens'] == 4


def test_latest_checkpoint_by_default_and_every_output_written(tmp_path):
    out = tmp_path / 'out'
    make_checkpoint_run(out, 'r1', [5, 40, 12])
    make_checkpoint_run(out, 'r2', [7])
    prompts = write_prompts(tmp_path / 'p.json', [GEN, MC, dict(MC, id='m2', category='gender', difficulty=3, score=3)])
    report = tmp_path / 'report'
    eh.main(['--runs_dir', str(out), '--probes', 'prompts', '--prompts', str(prompts), '--report_dir', str(report), '--max_new_tokens', '4',
             '--device', 'cpu'])
    for name in OUTPUTS:
        assert (report / name).is_file(), name
    summary = read_csv(report / 'summary_table.csv')
    assert [(s['run'], s['step'], s['prompts']) for s in summary] == [('r1', '40', '3'), ('r2', '7', '3')]
    results = read_csv(report / 'eval_results.csv')
    for s in summary:
        mine = [r for r in results if r['run'] == s['run']]
        assert int(s['passed']) == sum(int(r['passed']) for r in mine)
        assert float(s['weighted_score']) == pytest.approx(
            sum(float(r['points']) for r in mine) / sum(float(r['score']) for r in mine), abs=1e-4)
    assert len(read_csv(report / 'category_breakdown.csv')) == 2 * 2
    assert len(read_csv(report / 'difficulty_breakdown.csv')) == 2 * 3
    md = (report / 'summary_table.md').read_text()
    assert '| r1 | baseline | 40 |' in md and '| r2 | baseline | 7 |' in md


def test_sampling_settings_are_recorded_and_reproducible(tmp_path):
    out = tmp_path / 'out'
    make_checkpoint_run(out, 'r1', [10])
    prompts = write_prompts(tmp_path / 'p.json', [GEN, dict(GEN, id='g2', prompt='Dad is a man. Mom is a')])
    texts = []
    for name in ('a', 'b'):
        eh.main(['--out_dir', str(out), '--probes', 'prompts', '--prompts', str(prompts), '--report_dir', str(tmp_path / name),
                 '--temperature', '1.5', '--top_k', '50', '--seed', '7', '--max_new_tokens', '8', '--device', 'cpu'])
        texts.append([r['generated'] for r in read_csv(tmp_path / name / 'eval_results.csv')])
        settings = json.loads((tmp_path / name / 'settings.json').read_text())
        assert (settings['temperature'], settings['top_k'], settings['seed']) == (1.5, 50, 7)
        assert settings['decoding'].startswith('sampling')
    assert texts[0] == texts[1]
    assert 'sampling (temperature=1.5, top_k=50, seed=7)' in (tmp_path / 'a' / 'summary_table.md').read_text()


def test_no_runs_is_one_clear_line(tmp_path):
    prompts = write_prompts(tmp_path / 'p.json', [GEN])
    (tmp_path / 'empty').mkdir()
    for out_dir, message in ((tmp_path / 'empty', 'nothing to evaluate'),
                             (tmp_path / 'nowhere', 'runs folder not found')):
        with pytest.raises(SystemExit) as exc:
            eh.main(['--out_dir', str(out_dir), '--probes', 'prompts', '--prompts', str(prompts), '--report_dir', str(tmp_path / 'r')])
        assert message in str(exc.value.code) and '\n' not in str(exc.value.code)

# -----------------------------------------------------------------------------
# the shipped prompt file


def test_shipped_prompt_file_validates_and_meets_the_counts():
    prompts = eh.load_prompts(SHIPPED)
    assert len(prompts) >= 80
    categories = collections.Counter(p['category'] for p in prompts)
    assert len(categories) >= 6 and min(categories.values()) >= 8
    assert {p['difficulty'] for p in prompts} == {1, 2, 3}
    for p in prompts:  # harder items are worth more
        assert p['score'] == p['difficulty'], p['id']
    assert sum(p['type'] == 'choice' for p in prompts) / len(prompts) >= 0.4
    tok = load_tokenizer()
    for p in prompts:
        if p['type'] == 'choice':  # each choice must be a distinct continuation of a few tokens
            assert all(1 <= len(tok.encode(' ' + c)) <= 4 for c in p['choices']), p['id']
        # the answer should be the model's to produce, not already at the end of the prompt
        assert len(tok.encode(p['prompt'])) <= 40, p['id']

# -----------------------------------------------------------------------------
# the best checkpoint, seed groups, run status, each run's own tokenizer, the report folder


def test_best_checkpoint_is_evaluated_when_asked(tmp_path, capsys):
    out = tmp_path / 'out'
    run = make_checkpoint_run(out, 'r1', [10, 20])
    shutil.copy(run / 'checkpoints' / 'ckpt_000010.pt', runs.best_checkpoint_path(run))
    make_checkpoint_run(out, 'r2', [5])
    prompts = write_prompts(tmp_path / 'p.json', [GEN, MC, dict(GEN, id='g2', prompt='Dad is a man. Mom is a')])
    common = ['--runs_dir', str(out), '--probes', 'prompts', '--prompts', str(prompts), '--max_new_tokens', '6', '--device', 'cpu']
    eh.main(common + ['--checkpoint_step', 'best', '--report_dir', str(tmp_path / 'best')])
    assert 'skipped r2: no best checkpoint' in capsys.readouterr().out
    eh.main(common + ['--checkpoint_step', '10', '--runs', 'r1', '--report_dir', str(tmp_path / 'step10')])
    best, step10 = read_csv(tmp_path / 'best' / 'eval_results.csv'), read_csv(tmp_path / 'step10' / 'eval_results.csv')
    assert {r['step'] for r in best} == {'best'} and {r['run'] for r in best} == {'r1'}
    # ckpt_best.pt holds the step-10 weights: the same answers, not step 20's
    keys = ('prompt_id', 'generated', 'completion', 'passed', 'choice_logprobs')
    assert [tuple(r[k] for k in keys) for r in best] == [tuple(r[k] for k in keys) for r in step10]
    settings = json.loads((tmp_path / 'best' / 'settings.json').read_text())
    assert settings['checkpoint_step'] == 'best' and settings['evaluated'][0]['iter_num'] == 10
    with pytest.raises(SystemExit) as exc:
        eh.main(common + ['--checkpoint_step', 'last', '--report_dir', str(tmp_path / 'x')])
    assert "'last': expected an iteration number or 'best'" in str(exc.value.code)


def test_group_statistics_by_hand():
    """Every number of every group against the baseline group through stats.py: paired by seed where the
    seeds match, one run against the baseline's spread, a rerun of a seed counted once."""
    loaded = [dict(name=n, config=dict(model_name=m, seed=seed, n_layer=2)) for n, m, seed in [
        ('b1', 'baseline', 1), ('g1', 'gqa', 1), ('b2', 'baseline', 2), ('b3', 'baseline', 3), ('g2', 'gqa', 2),
        ('g3', 'gqa', 3), ('g3_again', 'gqa', 3), ('m1', 'mqa', 1)]]
    numbers = dict(b1={'prompts.accuracy': 0.5}, b2={'prompts.accuracy': 0.6}, b3={'prompts.accuracy': 0.7},
                   g1={'prompts.accuracy': 0.6}, g2={'prompts.accuracy': 0.8}, g3={'prompts.accuracy': 0.7},
                   g3_again={'prompts.accuracy': 0.1}, m1={'prompts.accuracy': 0.9, 'length.loss_1-2x': math.nan})
    groups = runs.seed_groups(loaded)
    rows = eh.group_statistics(groups, numbers, eh.pick_baseline(groups)[0])
    by = {(r['number'], r['group']): r for r in rows}
    base, gqa, mqa = (by['prompts.accuracy', g] for g in ('baseline', 'gqa', 'mqa'))
    assert (base['mean'], base['n'], base['verdict']) == (pytest.approx(0.6), 3, 'baseline')
    assert base['std'] == pytest.approx(0.1) and base['diff_vs_baseline'] is None
    # gqa: seeds 1, 2, 3 (g3_again is seed 3 again: left out): differences 0.1, 0.2, 0.0
    assert gqa['n'] == 3 and gqa['mean'] == pytest.approx(0.7) and gqa['method'].startswith('paired by seed')
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, df 2) x sd / sqrt(n)
    assert gqa['diff_vs_baseline'] == pytest.approx(0.1)
    assert (gqa['ci95_low'], gqa['ci95_high']) == (pytest.approx(0.1 - half), pytest.approx(0.1 + half))
    assert gqa['verdict'] == 'within noise'
    # one run against the baseline's three: the baseline's spread, sqrt(1 + 1/3) wider
    assert mqa['n'] == 1 and mqa['diff_vs_baseline'] == pytest.approx(0.3) and mqa['method'].startswith('n=1')
    assert mqa['ci95_high'] - 0.3 == pytest.approx(4.302652729911275 * 0.1 * math.sqrt(4 / 3))
    # Holm over the groups of one number: each row's adjusted p is at least its own
    assert gqa['p_holm'] >= gqa['p_value'] and mqa['p_holm'] >= mqa['p_value']
    # a number no run of a group has: said, not a crash
    assert by['length.loss_1-2x', 'mqa']['verdict'].startswith('no value') and by['length.loss_1-2x', 'mqa']['n'] == 0
    from runs import pick_baseline  # the one picker compare.py uses too
    assert pick_baseline(groups, 'g2')[0]['label'] == 'gqa'
    with pytest.raises(ValueError, match="--baseline 'nope' matches no run or group"):
        pick_baseline(groups, 'nope')


def test_groups_and_status_beside_the_per_run_rows(tmp_path):
    out = tmp_path / 'out'
    make_checkpoint_run(out, 'base_s1', [10], seed=1, config=dict(model_name='baseline', seed=1),
             summary=dict(status='completed'))
    make_checkpoint_run(out, 'base_s2', [10], seed=2, config=dict(model_name='baseline', seed=2),
             summary=dict(status='running', host=socket.gethostname(), pid=dead_pid()))
    make_checkpoint_run(out, 'wide_s1', [10], seed=3, config=dict(model_name='baseline', seed=1, n_embd=32),
             summary=dict(status='failed', message='out of memory'))
    prompts = write_prompts(tmp_path / 'p.json', [GEN, MC, dict(MC, id='m2', prompt='The ice is cold, but the fire is',
                                                                  choices=['hot', 'cold'])])
    report = tmp_path / 'report'
    eh.main(['--runs_dir', str(out), '--probes', 'prompts', '--prompts', str(prompts), '--report_dir', str(report), '--max_new_tokens', '4',
             '--device', 'cpu'])
    summary = {s['run']: s for s in read_csv(report / 'summary_table.csv')}
    assert {r: s['status'] for r, s in summary.items()} == dict(base_s1='completed', base_s2='stale', wide_s1='failed')
    groups = {g['runs']: g for g in read_csv(report / 'groups.csv') if g['number'] == 'prompts.accuracy'}
    assert set(groups) == {'base_s1 base_s2', 'wide_s1'}
    assert summary['base_s1']['group'] == summary['base_s2']['group'] == groups['base_s1 base_s2']['group']
    a, b = (float(summary[r]['accuracy']) for r in ('base_s1', 'base_s2'))
    pair = groups['base_s1 base_s2']
    assert float(pair['mean']) == pytest.approx((a + b) / 2, abs=1e-4)
    assert float(pair['std'] or 0) == pytest.approx(abs(a - b) / math.sqrt(2), abs=1e-4)
    assert groups['wide_s1']['std'] == '' and groups['wide_s1']['n'] == '1'
    assert pair['verdict'] == 'baseline' and groups['wide_s1']['method'].startswith('n=1')
    md = (report / 'summary_table.md').read_text()
    assert '| base_s2 | baseline | 10 | stale |' in md and '| wide_s1 | baseline | 10 | failed |' in md
    assert '## Seed groups' in md and '| prompts.accuracy | baseline [n_embd=null] | base_s1 base_s2 | 2 |' in md


def test_each_run_is_evaluated_with_its_own_tokenizer(tmp_path):
    """A run with its own BPE is encoded and decoded with it; once its tokenizer file is changed or gone
    it is skipped with one line naming the file (never decoded with GPT-2's), and the other run is still
    evaluated."""
    from tokenizers import Tokenizer
    out = tmp_path / 'out'
    make_checkpoint_run(out, 'a_gpt2', [10])
    bpe = make_checkpoint_run(out, 'b_bpe', [10], seed=4, bpe=True)
    prompts = write_prompts(tmp_path / 'p.json', [GEN, dict(GEN, id='g2', prompt='Dad is a man. Mom is a'), MC])
    args = ['--runs_dir', str(out), '--probes', 'prompts', '--prompts', str(prompts), '--max_new_tokens', '8', '--device', 'cpu']
    eh.main(args + ['--report_dir', str(tmp_path / 'ok')])
    rows = [r for r in read_csv(tmp_path / 'ok' / 'eval_results.csv') if r['run'] == 'b_bpe']
    hf = Tokenizer.from_file(str(bpe / 'tokenizer.json'))
    model, _ = load_checkpoint(bpe / 'checkpoints' / 'ckpt_000010.pt')
    eot = hf.token_to_id(EOT_TEXT)
    for r in rows[:2]:
        prompt = GEN['prompt'] if r['prompt_id'] == 'g1' else 'Dad is a man. Mom is a'
        [ids] = model.generate([hf.encode(prompt, add_special_tokens=False).ids], 8, eot_token=eot)
        assert r['generated'] == hf.decode(ids, skip_special_tokens=False)
    settings = json.loads((tmp_path / 'ok' / 'settings.json').read_text())
    assert {e['run']: e['tokenizer'] for e in settings['evaluated']} == dict(a_gpt2='gpt2', b_bpe='bpe400')

    path = bpe / 'tokenizer.json'
    for change, message in ((lambda: path.write_text(path.read_text() + '\n'), 'sha256'), (path.unlink, 'not found')):
        change()
        report = tmp_path / message.replace(' ', '_')
        eh.main(args + ['--report_dir', str(report)])
        settings = json.loads((report / 'settings.json').read_text())
        assert [e['run'] for e in settings['evaluated']] == ['a_gpt2']
        [skip] = settings['skipped']
        assert skip['run'] == 'b_bpe' and str(path) in skip['reason'] and message in skip['reason']
        assert '\n' not in skip['reason']
        assert {r['run'] for r in read_csv(report / 'eval_results.csv')} == {'a_gpt2'}


def test_bpe_run_is_evaluated_with_its_own_tokenizer(bpe_run, tmp_path):
    """A run trained on the bpe4k data is scored by eval_harness.py with its own tokenizer."""
    report = tmp_path / 'report'
    prompts = write_prompts(tmp_path / 'p.json', [GEN, MC])
    eh.main(['--runs_dir', str(bpe_run.parent), '--runs', bpe_run.name, '--probes', 'prompts', '--prompts', str(prompts),
             '--report_dir', str(report), '--max_new_tokens', '8', '--device', 'cpu'])
    [entry] = json.loads((report / 'settings.json').read_text())['evaluated']
    assert entry['tokenizer'] == 'bpe4k'
    from tokenizers import Tokenizer
    model, ckpt = load_checkpoint(runs.resolve_checkpoint(bpe_run)[1])
    # the file the checkpoint names, read here, not through the code under test
    hf = Tokenizer.from_file(str(bpe_run / ckpt['tokenizer']['file']))
    assert hf.get_vocab_size() == 4096
    [ids] = model.generate([hf.encode(GEN['prompt'], add_special_tokens=False).ids], 8,
                           eot_token=hf.token_to_id(EOT_TEXT))
    [row] = [r for r in read_csv(report / 'eval_results.csv') if r['prompt_id'] == 'g1']
    assert row['generated'] == hf.decode(ids, skip_special_tokens=False)


def test_unwritable_report_dir_is_one_line(tmp_path, monkeypatch):
    out = tmp_path / 'out'
    make_checkpoint_run(out, 'r1', [10])
    prompts = write_prompts(tmp_path / 'p.json', [GEN])
    (tmp_path / 'a_file').write_text('not a folder')
    args = ['--runs_dir', str(out), '--probes', 'prompts', '--prompts', str(prompts), '--max_new_tokens', '4', '--device', 'cpu']
    with pytest.raises(SystemExit) as exc:  # found before any model loads
        eh.main(args + ['--report_dir', str(tmp_path / 'a_file' / 'report')])
    text = str(exc.value.code)
    assert text.startswith('eval_harness.py: error: --report_dir ') and 'a_file' in text and 'not a folder' in text

    def disk_full(path, text):
        raise OSError(28, 'No space left on device', str(path) + '.tmp')
    monkeypatch.setattr(eh, 'atomic_write_text', disk_full)
    with pytest.raises(SystemExit) as exc:  # a write that fails at the end
        eh.main(args + ['--report_dir', str(tmp_path / 'report')])
    text = str(exc.value.code)
    assert text.startswith('eval_harness.py: error: --report_dir ') and 'No space left on device' in text
    assert '\n' not in text and 'probes.csv' in text

# -----------------------------------------------------------------------------
# end to end on real checkpoints (the shared smoke runs: baseline_s1/s2, gqa_s1/s2, steps 15 and 30)


def test_end_to_end_on_smoke_runs(smoke_runs, tmp_path):
    report = tmp_path / 'latest'
    eh.main(['--out_dir', str(smoke_runs), '--probes', 'prompts', '--prompts', str(SHIPPED), '--report_dir', str(report), '--device', 'cpu'])
    n_prompts = len(eh.load_prompts(SHIPPED))
    summary = read_csv(report / 'summary_table.csv')
    assert [(s['run'], s['model_name'], s['step'], s['status']) for s in summary] == [
        ('baseline_s1', 'baseline', '30', 'completed'), ('baseline_s2', 'baseline', '30', 'completed'),
        ('gqa_s1', 'gqa', '30', 'completed'), ('gqa_s2', 'gqa', '30', 'completed')]
    results = read_csv(report / 'eval_results.csv')
    assert len(results) == 4 * n_prompts
    for r in results:
        assert r['passed'] in ('0', '1')
        if r['type'] == 'choice':
            lps = [float(x) for x in r['choice_logprobs'].split(';')]
            assert all(lp < 0 for lp in lps) and r['passed'] == str(int(r['chosen_index'] == r['answer_index']))
    # seed groups: the two seeds of each model, mean and std of their per-run rows
    groups = [g for g in read_csv(report / 'groups.csv') if g['number'] == 'prompts.weighted_score']
    assert [(g['runs'], g['n']) for g in groups] == [('baseline_s1 baseline_s2', '2'), ('gqa_s1 gqa_s2', '2')]
    for g in groups:
        a, b = (float(s['weighted_score']) for s in summary if s['run'] in g['runs'].split())
        assert float(g['mean']) == pytest.approx((a + b) / 2, abs=1e-4)
        assert float(g['std'] or 0) == pytest.approx(abs(a - b) / math.sqrt(2), abs=1e-4)
    gqa = groups[1]  # paired with the baseline by seed: the mean of the two per-seed differences
    diffs = [float(summary[i + 2]['weighted_score']) - float(summary[i]['weighted_score']) for i in (0, 1)]
    assert float(gqa['diff_vs_baseline']) == pytest.approx(sum(diffs) / 2, abs=1e-4)
    assert gqa['method'].startswith('paired by seed (1, 2)') or gqa['verdict'].startswith('no difference')
    # greedy decoding is deterministic and batch-independent: the same checkpoint, other batches
    model, _, tok, _ = runs.load_run_model(smoke_runs / 'baseline_s1', 30)
    prompts = eh.load_prompts(SHIPPED)
    again = eh.evaluate_model(model, tok, prompts, batch_size=7)
    first = [r for r in results if r['run'] == 'baseline_s1']
    assert [(r['generated'], r['completion']) for r in again] == [(r['generated'], r['completion']) for r in first]

    # a copied run without checkpoints is skipped; a requested step picks that checkpoint
    out = tmp_path / 'out'
    light_copy(smoke_runs / 'baseline_s1', out / 'baseline_s1')
    light_copy(smoke_runs / 'gqa_s1', out / 'gqa_s1')
    shutil.rmtree(out / 'gqa_s1' / 'checkpoints')
    prompts = write_prompts(tmp_path / 'p.json', [GEN, MC])
    eh.main(['--out_dir', str(out), '--checkpoint_step', '15', '--probes', 'prompts', '--prompts', str(prompts),
             '--report_dir', str(tmp_path / 'step15'), '--device', 'cpu'])
    settings = json.loads((tmp_path / 'step15' / 'settings.json').read_text())
    assert [(s['run'], s['reason'].split(' (')[0]) for s in settings['skipped']] == [
        ('gqa_s1', f"no checkpoints in {out / 'gqa_s1' / 'checkpoints'}")]
    summary = read_csv(tmp_path / 'step15' / 'summary_table.csv')
    assert [(s['run'], s['step']) for s in summary] == [('baseline_s1', '15')]
