"""probes.py and eval_harness.py's probes: loss by position on a model whose losses are known, a learned
position table that cannot go past its context (said, not a crash), the longer model equal to the
original on its own context, copy accuracy 100% for a model that copies by construction, generation
statistics on fixed strings, and the report of real tiny runs (baseline and gpt2, two seeds each)."""
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn as nn

import eval_harness as eh
import probes
from model import GPT, MODEL_REGISTRY, make_config
from runs import save_checkpoint
from conftest import read_csv, write_bpe_tokenizer

SETTINGS = dict(probes.DEFAULT_SETTINGS, length_sequences=3, length_buckets=4, copy_sequences=5, copy_tokens=6)
STORIES = ['Once upon a time a cat sat on a mat.', 'Tom ran to the park. He was happy.', 'The sun was hot.',
           'Lily had a red ball and a blue kite.', 'A dog barked at the big tree all day long.'] * 4


class CharTokenizer:
    """One token per character (ids 1..95), end-of-text 0: easy to count by hand."""
    name, sha256, vocab_size, eot_token = 'chars', 'none', 96, 0

    def encode(self, text):
        return [min(max(ord(c) - 31, 1), 95) for c in text]

    def decode(self, ids):
        return ''.join(chr(i + 31) for i in ids)

    def token_byte_lengths(self):
        return np.array([0] + [1] * 95)


@dataclass
class StubConfig:
    block_size: int = 8
    vocab_size: int = 96
    learned_positions: bool = False


class PositionLoss(nn.Module):
    """Its loss at position t is t nats (logits all zero): every band and bucket mean is arithmetic.
    With learned_positions it holds a (block_size, 1) table, as GPT-2's wpe."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.table = nn.Parameter(torch.zeros(config.block_size, 1)) if config.learned_positions else None

    def forward(self, idx, targets, reduction='none'):
        B, T = idx.shape
        assert T <= self.config.block_size, 'ran past the context it was built for'
        loss = torch.arange(T, dtype=torch.float32).expand(B, T)
        return torch.zeros(B, T, self.config.vocab_size), loss


class Copier(nn.Module):
    """Predicts, at each position, the token that followed the previous occurrence of the current token
    (end-of-text where there is none): an induction head by construction."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, idx, targets, reduction='none'):
        logits = torch.zeros(*idx.shape, self.config.vocab_size)
        for b, row in enumerate(idx.tolist()):
            for t, token in enumerate(row):
                earlier = [j for j in range(t) if row[j] == token]
                logits[b, t, row[earlier[-1] + 1] if earlier else 0] = 10.0
        return logits, nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction='none')

# -----------------------------------------------------------------------------
# length


def test_loss_by_position_on_a_model_with_known_losses():
    tok = CharTokenizer()
    numbers, detail = probes.probe_length(PositionLoss(StubConfig()), tok, dict(stories=STORIES), SETTINGS)
    assert detail['reach'] == 4 and detail['status'] == 'ran to 4x (32 tokens)'
    # loss t at position t: bands 0..7, 8..15, 16..31
    assert numbers['loss_0-1x'] == pytest.approx(3.5)
    assert numbers['loss_1-2x'] == pytest.approx(11.5)
    assert numbers['loss_2-4x'] == pytest.approx(23.5)
    # buckets of 8 / 4 = 2 positions: (2k + 2k + 1) / 2
    assert [(p['start'], p['end']) for p in detail['positions']] == [(s, s + 2) for s in range(0, 32, 2)]
    assert [p['loss'] for p in detail['positions']] == pytest.approx([2 * k + 0.5 for k in range(16)])
    # bits per byte: text targets only (end-of-text has no bytes), by hand from the same sequences
    seqs = np.array(probes.story_sequences(tok, STORIES, 32, 3))
    assert (seqs[:, 0] == 0).all() and (seqs == 0).sum() > 3  # each starts at a story; stories end in EOT
    text = seqs[:, 1:] > 0
    loss = np.broadcast_to(np.arange(32.0), text.shape)
    for band, (lo, hi) in (('0-1x', (0, 8)), ('1-2x', (8, 16)), ('2-4x', (16, 32))):
        expected = loss[:, lo:hi][text[:, lo:hi]].sum() / math.log(2) / text[:, lo:hi].sum()
        assert numbers[f'bpb_{band}'] == pytest.approx(expected)


def test_story_sequences_are_whole_stories_from_their_start():
    tok = CharTokenizer()
    seqs = probes.story_sequences(tok, STORIES, 60, 3)
    assert seqs[0] == ([0] + tok.encode(STORIES[0]) + [0] + tok.encode(STORIES[1]) + [0])[:61]
    assert seqs[1][:1 + len(STORIES[2])] == [0] + tok.encode(STORIES[2])  # the next sequence: the next story
    with pytest.raises(ValueError, match='hold 1 sequences of 301 tokens, 2 are needed'):
        probes.story_sequences(tok, STORIES[:10], 300, 2)


def test_a_learned_position_table_says_it_cannot_go_past_its_context():
    numbers, detail = probes.probe_length(PositionLoss(StubConfig(learned_positions=True)), CharTokenizer(),
                                          dict(stories=STORIES), SETTINGS)
    assert detail['reach'] == 1 and 'cannot run past its training context of 8 tokens' in detail['status']
    assert 'table' in detail['status']  # names the parameter sized by the context
    assert numbers['loss_0-1x'] == pytest.approx(3.5)
    assert math.isnan(numbers['loss_1-2x']) and math.isnan(numbers['bpb_2-4x'])
    # the real model: GPT-2's learned positions stop at 1x, rotary positions run to 4x
    tok = CharTokenizer()
    for name, reach in (('gpt2', 1), ('baseline', 4)):
        model = GPT(make_config(name, n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=96)).eval()
        numbers, detail = probes.probe_length(model, tok, dict(stories=STORIES), SETTINGS)
        assert detail['reach'] == reach, detail['status']
        assert math.isfinite(numbers['loss_0-1x']) and math.isfinite(numbers['loss_2-4x']) == (reach == 4)
    assert 'transformer.wpe.weight' in probes.at_length(
        GPT(make_config('gpt2', n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=96)), 16)[1]


@pytest.mark.parametrize('name', list(MODEL_REGISTRY))
def test_the_longer_model_is_the_same_model_on_its_own_context(name):
    """Scoring once at 4x and reading the first block_size positions as the 1x result is right only if
    the longer model computes exactly what the original does there: every registered variant either
    does, or says why it cannot run longer."""
    torch.manual_seed(0)
    model = GPT(make_config(name, n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=96)).eval()
    longer, why = probes.at_length(model, 32)
    if longer is None:  # only a weight sized by the context rules it out
        assert 'cannot run past its training context of 8 tokens' in why
        assert any(p.shape[0] == 8 for p in model.parameters())
        return
    assert why is None and longer.config.block_size == 32
    seqs = torch.randint(1, 96, (3, 33)).tolist()
    short_loss, _ = probes.token_losses(model, [s[:9] for s in seqs])
    long_loss, _ = probes.token_losses(longer, seqs)
    assert long_loss[:, :8] == pytest.approx(short_loss, abs=1e-5)
    assert model.config.block_size == 8  # the original is untouched

# -----------------------------------------------------------------------------
# copy


def test_copy_accuracy_is_100_percent_for_a_model_that_copies():
    numbers, detail = probes.probe_copy(Copier(StubConfig(block_size=40)), CharTokenizer(), dict(stories=STORIES),
                                        SETTINGS)
    for task in ('random', 'story'):
        assert numbers[f'{task}_acc_second'] == 1.0 and numbers[f'{task}_acc_first'] == 0.0
        assert numbers[f'{task}_loss_second'] < 0.01 < 5 < numbers[f'{task}_loss_first']
        assert detail[task]['sequences'] == 5 and detail[task]['copy_tokens'] == 6


def test_copy_tasks_are_deterministic_and_the_copies_are_where_the_targets_say():
    tok = CharTokenizer()
    tasks = probes.copy_tasks(tok, STORIES, 40, SETTINGS)
    again = probes.copy_tasks(tok, STORIES, 40, SETTINGS)
    other = probes.copy_tasks(tok, STORIES, 40, dict(SETTINGS, seed=7))
    assert tasks['random'][0] == again['random'][0] and tasks['story'][0] == again['story'][0]
    assert tasks['random'][0] != other['random'][0]
    for seqs, first, second in tasks.values():
        for s in seqs:
            s = np.array(s)
            # loss column i predicts token i + 1: both copies hold the same tokens, found nowhere else
            assert (s[first + 1] == s[second + 1]).all()
            copy = set(s[first[0]:first[-1] + 2].tolist())
            assert len(copy) == 6 and sum(t in copy for t in s.tolist()) == 12

# -----------------------------------------------------------------------------
# generation


def test_text_statistics_on_fixed_strings():
    texts = ['The cat sat on the mat. The cat sat on the mat!', "Lily's dog ran."]
    s = probes.text_statistics(texts)
    # words: the cat sat on the mat the cat sat on the mat (12) | lily's dog ran (3)
    assert s['mean_words'] == pytest.approx(7.5)
    # 9 four-grams in the first text, 3 repeat an earlier one (the cat sat on, cat sat on the, sat on the mat);
    # the second text has none
    assert s['rep4'] == pytest.approx(3 / 9)
    # unigrams: the cat sat on mat lily's dog ran = 8 distinct of 15
    assert s['distinct1'] == pytest.approx(8 / 15)
    # bigrams: 11 + 2 = 13; distinct: the-cat cat-sat sat-on on-the the-mat mat-the lily's-dog dog-ran = 8
    assert s['distinct2'] == pytest.approx(8 / 13)
    empty = probes.text_statistics([''])
    assert empty['mean_words'] == 0 and math.isnan(empty['rep4']) and math.isnan(empty['distinct1'])


class FixedWriter(nn.Module):
    """generate returns fixed continuations; score gives each token log-prob -2."""

    def __init__(self, new):
        super().__init__()
        self.config, self.new = StubConfig(block_size=64), new

    def generate(self, prompts, max_new_tokens, **kw):
        return [list(ids[:max_new_tokens]) for ids in self.new]

    def score(self, prompts, continuations):
        return [-2.0 * len(c) for c in continuations], [False] * len(prompts)


def test_generation_statistics_of_fixed_continuations():
    tok = CharTokenizer()
    new = [tok.encode('a b a b a b'), tok.encode('cat.'), []]  # cut at max_new, ended, ended at once
    s = probes.generation_statistics(FixedWriter(new), tok, [[1], [2], [3]], new, max_new=11)
    assert s['eot_share'] == pytest.approx(2 / 3)
    assert s['self_loss'] == pytest.approx(2.0)  # 15 tokens at -2 each, the empty one not scored
    assert s['mean_words'] == pytest.approx(7 / 3) and s['rep4'] == pytest.approx(1 / 3)
    # the probe: greedy and sampled, each story beside its numbers
    numbers, detail = probes.probe_generation(FixedWriter(new), tok, dict(openings=['Hi', 'Yo', 'Oh']),
                                              dict(SETTINGS, generation_tokens=11))
    assert numbers['greedy_eot_share'] == numbers['sampled_eot_share'] == pytest.approx(2 / 3)
    assert [(x['decoding'], x['opening'], x['text'], x['ended']) for x in detail['stories']][:2] == [
        ('greedy', 'Hi', 'a b a b a b', False), ('greedy', 'Yo', 'cat.', True)]

# -----------------------------------------------------------------------------
# the report on real tiny runs: baseline and gpt2, two seeds each


@pytest.fixture(scope='module')
def zoo(tmp_path_factory):
    """Four runs with their own small BPE: baseline and gpt2 (learned positions), seeds 1 and 2."""
    out = tmp_path_factory.mktemp('probes') / 'out'
    for name in ('baseline', 'gpt2'):
        for seed in (1, 2):
            run = out / f'{name}_s{seed}'
            (run / 'checkpoints').mkdir(parents=True)
            info = write_bpe_tokenizer(run)
            (run / 'config.json').write_text(json.dumps(dict(run_name=run.name, model_name=name, seed=seed)))
            (run / 'metrics.csv').write_text('iter,tokens_seen,val_loss\n')
            torch.manual_seed(seed)
            model = GPT(make_config(name, n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=info['vocab_size']))
            save_checkpoint(run / 'checkpoints' / 'ckpt_000010.pt', model, iter_num=10, tokenizer=info)
    return out


def test_report_of_baseline_and_gpt2(zoo, tmp_path):
    report = tmp_path / 'report'
    eh.main(['--runs_dir', str(zoo), '--report_dir', str(report), '--device', 'cpu', '--probes',
             'length,copy,generation', '--length_sequences', '4', '--copy_sequences', '4',
             '--generation_tokens', '8'])
    page = (report / 'report.html').read_text()
    assert '<img src="length.png"' in page and (report / 'length.png').read_bytes()[:4] == b'\x89PNG'
    assert 'cannot run past its training context of 32 tokens: transformer.wpe.weight' in page
    groups = read_csv(report / 'groups.csv')
    by = {(g['number'], g['group']): g for g in groups}
    assert {g['group'] for g in groups} == {'baseline', 'gpt2'}
    assert by['length.loss_0-1x', 'baseline']['verdict'] == 'baseline'
    gpt2 = by['length.loss_0-1x', 'gpt2']
    assert gpt2['n'] == '2' and gpt2['method'].startswith('paired by seed')
    assert float(gpt2['ci95_low']) < float(gpt2['diff_vs_baseline']) < float(gpt2['ci95_high'])
    assert by['length.loss_2-4x', 'gpt2']['verdict'].startswith('no value')
    assert by['length.loss_2-4x', 'baseline']['n'] == '2'
    # every number of every probe went through the statistics
    per_run = read_csv(report / 'probes.csv')
    numbers = {r['number'] for r in per_run if r['number']}
    assert {n.split('.')[0] for n in numbers} == {'length', 'copy', 'generation'}
    assert {g['number'] for g in groups} == numbers
    base = [float(r['value']) for r in per_run if r['number'] == 'copy.random_acc_second' and r['group'] == 'baseline']
    assert float(by['copy.random_acc_second', 'baseline']['mean']) == pytest.approx(np.mean(base), abs=1e-5)
    assert len(read_csv(report / 'generations.csv')) == 4 * 2 * len(probes.OPENINGS)
    assert {r['run'] for r in read_csv(report / 'length_positions.csv')} == {'baseline_s1', 'baseline_s2',
                                                                            'gpt2_s1', 'gpt2_s2'}
    settings = json.loads((report / 'settings.json').read_text())
    assert settings['probes'] == ['length', 'copy', 'generation'] and 'eval_results.csv' not in set(
        p.name for p in report.iterdir())
    assert all(set(e['probe_s']) == {'length', 'copy', 'generation'} for e in settings['evaluated'])


def test_probes_flag_is_checked(tmp_path):
    with pytest.raises(SystemExit) as exc:
        eh.main(['--runs_dir', str(tmp_path), '--probes', 'length,speed'])
    assert "expected some of length,copy,generation,prompts" in str(exc.value.code)
    assert '\n' not in str(exc.value.code)


def test_self_loss_scores_every_token_of_a_continuation_past_the_context():
    """A continuation longer than the context is scored in pieces of block_size // 2 that cover it once,
    each after the prompt and everything generated before it."""
    tok = CharTokenizer()
    calls = []

    class Recorder(FixedWriter):
        def score(self, prompts, continuations):
            calls.append((prompts, continuations))
            return super().score(prompts, continuations)

    writer = Recorder([])
    writer.config = StubConfig(block_size=8)
    new = [list(range(10, 30)), [5, 6, 7]]
    s = probes.generation_statistics(writer, tok, [[1, 2], [3]], new, max_new=20)
    [(contexts, pieces)] = calls
    assert pieces == [new[0][i:i + 4] for i in range(0, 20, 4)] + [[5, 6, 7]]
    assert contexts == [[1, 2] + new[0][:i] for i in range(0, 20, 4)] + [[3]]
    assert s['self_loss'] == pytest.approx(2.0) and s['eot_share'] == pytest.approx(1 / 2)
    # a real model continues past its 8-token context and scores what it wrote
    torch.manual_seed(0)
    model = GPT(make_config('baseline', n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=96)).eval()
    [ids] = model.generate([tok.encode('Hi')], 20, eot_token=tok.eot_token)
    assert len(ids) == 20
    assert probes.generation_statistics(model, tok, [tok.encode('Hi')], [ids], max_new=20)['self_loss'] > 0
