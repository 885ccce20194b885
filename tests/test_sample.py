"""sample.py: the same seed gives the same stories, temperature 0 equals greedy model.generate and
eval_harness.py's output, `best`, <|endoftext|> as the start, prompt files, each run's own tokenizer,
each bad input as one line, and the command line."""
import json
import os

import pytest

import eval_harness as eh
import runs
import sample
from conftest import EOT_TEXT, REPO, SHIPPED, light_copy, make_checkpoint_run, read_csv, run_script, write_prompts

PROMPTS = ['Once upon a time', 'Tom and Lily went to the park']


def printed_stories(text):
    """The stories main() printed, in order (each after its '--- prompt i, sample j ---' line)."""
    parts = text.split('\n--- prompt ')[1:]
    return [p.split(' ---\n', 1)[1].removesuffix('\n') for p in parts]


def greedy(model, tok, prompt, max_new_tokens):
    ids = tok.encode(prompt) if prompt else [tok.eot_token]
    [new] = model.generate([ids], max_new_tokens, temperature=0.0, eot_token=tok.eot_token)
    return tok.decode(new)


def test_same_seed_same_stories_in_prompt_major_order(smoke_runs):
    run = smoke_runs / 'baseline_s1'
    first = sample.generate_stories(run, PROMPTS, num_samples=3, max_new_tokens=24, seed=3)
    assert len(first) == 6 and all(isinstance(t, str) for t in first)
    assert sample.generate_stories(run, PROMPTS, num_samples=3, max_new_tokens=24, seed=3) == first
    assert sample.generate_stories(run, PROMPTS, num_samples=3, max_new_tokens=24, seed=4) != first
    assert len(set(first[:3])) > 1  # the samples of one prompt are drawn, not copied
    # temperature 0: each prompt's greedy continuation, num_samples times, prompt by prompt
    model, _, tok, _ = runs.load_run_model(run)
    expected = [greedy(model, tok, p, 24) for p in PROMPTS]
    got = sample.generate_stories(run, PROMPTS, num_samples=2, max_new_tokens=24, temperature=0)
    assert got == [expected[0], expected[0], expected[1], expected[1]]


def test_greedy_equals_eval_harness(smoke_runs, tmp_path):
    gen = [p for p in json.loads(SHIPPED.read_text())['prompts'] if 'answers' in p][:4]
    report = tmp_path / 'report'
    eh.main(['--runs_dir', str(smoke_runs), '--runs', 'gqa_s1', '--prompts', str(write_prompts(tmp_path / 'p.json', gen)),
             '--report_dir', str(report), '--device', 'cpu', '--max_new_tokens', '20', '--probes', 'prompts'])
    harness = [r['generated'] for r in read_csv(report / 'eval_results.csv')]
    stories = sample.generate_stories(smoke_runs / 'gqa_s1', [p['prompt'] for p in gen], max_new_tokens=20,
                                      temperature=0)
    assert stories == harness and any(harness)


def test_best_checkpoint_and_the_start_of_a_story(smoke_runs, tmp_path, capsys):
    run = light_copy(smoke_runs / 'baseline_s1', tmp_path / 'out' / 'baseline_s1')
    best = runs.best_checkpoint_path(run)
    best.unlink(missing_ok=True)  # a link in the copy: the shared run keeps its own
    os.link(run / 'checkpoints' / 'ckpt_000015.pt', best)
    common = ['--runs_dir', str(tmp_path / 'out'), '--run_name', 'baseline_s1', '--temperature', '0',
              '--max_new_tokens', '16', '--device', 'cpu']
    outputs = {}
    for step in ('best', '15'):
        sample.main(common + ['--checkpoint_step', step, '--prompt', 'Once upon a time', '--num_samples', '1'])
        outputs[step] = capsys.readouterr().out
    assert 'baseline_s1 at the best checkpoint (iteration 15), bpe4k tokenizer, greedy' in outputs['best']
    assert printed_stories(outputs['best']) == printed_stories(outputs['15'])
    assert printed_stories(outputs['best'])[0].startswith('Once upon a time')
    # no prompt: a story from <|endoftext|>, the newest checkpoint by default
    sample.main(common + ['--num_samples', '2'])
    out = capsys.readouterr().out
    assert 'baseline_s1 at step 30,' in out
    model, _, tok, _ = runs.load_run_model(run, 30)
    assert printed_stories(out) == [greedy(model, tok, '', 16)] * 2


def test_prompt_file_one_prompt_per_line(smoke_runs, tmp_path, capsys):
    path = tmp_path / 'prompts.txt'
    path.write_text('Once upon a time  \n\n   \nTom and Lily went to the park\n')
    sample.main(['--runs_dir', str(smoke_runs), '--run_name', 'gqa_s2', '--prompt_file', str(path),
                 '--num_samples', '2', '--max_new_tokens', '12', '--seed', '5', '--device', 'cpu'])
    stories = printed_stories(capsys.readouterr().out)
    assert len(stories) == 4
    assert [s[:len(PROMPTS[i // 2])] for i, s in enumerate(stories)] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    again = sample.generate_stories(smoke_runs / 'gqa_s2', PROMPTS, num_samples=2, max_new_tokens=12, seed=5)
    assert stories == [PROMPTS[i // 2] + t for i, t in enumerate(again)]

# -----------------------------------------------------------------------------
# each run's own tokenizer


def test_a_run_is_sampled_with_its_own_tokenizer(tmp_path):
    from tokenizers import Tokenizer
    run = make_checkpoint_run(tmp_path / 'out', 'bpe', [10], seed=2, bpe=True)
    hf = Tokenizer.from_file(str(run / 'tokenizer.json'))
    model, _, _, _ = runs.load_run_model(run)
    [ids] = model.generate([hf.encode(PROMPTS[0], add_special_tokens=False).ids], 10,
                           eot_token=hf.token_to_id(EOT_TEXT))
    assert sample.generate_stories(run, PROMPTS[:1], max_new_tokens=10, temperature=0) == \
        [hf.decode(ids, skip_special_tokens=False)]


def test_bpe_run_is_sampled_with_its_own_tokenizer(bpe_run, capsys):
    """A run trained on the bpe4k data is sampled by sample.py with its own tokenizer."""
    sample.main(['--runs_dir', str(bpe_run.parent), '--run_name', bpe_run.name, '--prompt', PROMPTS[0],
                 '--temperature', '0', '--max_new_tokens', '16', '--num_samples', '1', '--device', 'cpu'])
    out = capsys.readouterr().out
    assert 'bpe4k tokenizer' in out
    from tokenizers import Tokenizer
    file = runs.read_run(bpe_run)['config']['tokenizer_info']['file']  # content-named: tokenizer-<sha>.json
    hf = Tokenizer.from_file(str(bpe_run / file))  # read here, not through the code under test
    model, _, _, _ = runs.load_run_model(bpe_run)
    [ids] = model.generate([hf.encode(PROMPTS[0], add_special_tokens=False).ids], 16,
                           eot_token=hf.token_to_id(EOT_TEXT))
    assert printed_stories(out) == [PROMPTS[0] + hf.decode(ids, skip_special_tokens=False)]

# -----------------------------------------------------------------------------
# bad input: one line naming the problem, exit 1


@pytest.fixture(scope='module')
def tiny_runs(tmp_path_factory):
    """out/ with tiny runs (block_size 64): ok (step 10), empty (no checkpoints), and two BPE runs whose
    tokenizer file was changed (bpe_changed) or removed (bpe_missing) after training."""
    out = tmp_path_factory.mktemp('sample') / 'out'
    make_checkpoint_run(out, 'ok', [10])
    make_checkpoint_run(out, 'empty', [])
    changed = make_checkpoint_run(out, 'bpe_changed', [10], bpe=True) / 'tokenizer.json'
    changed.write_text(changed.read_text().replace('"<|endoftext|>"', '"<|end|>"'))
    (make_checkpoint_run(out, 'bpe_missing', [10], bpe=True) / 'tokenizer.json').unlink()
    (out.parent / 'empty.txt').write_text('\n  \n\n')
    return out


BAD_INPUTS = [
    ('no checkpoints', ['--run_name', 'empty'], 'empty: no checkpoints in'),
    ('missing step', ['--checkpoint_step', '99'], 'ok: no checkpoint at step 99 (has 10)'),
    ('missing best', ['--checkpoint_step', 'best'], 'ok: no best checkpoint'),
    ('step not a number', ['--checkpoint_step', 'last'], "'last': expected an iteration number or 'best'"),
    ('missing run', ['--run_name', 'nope'], 'no run folder {out}/nope (with config.json and metrics.csv); runs in'),
    ('missing runs dir', ['--runs_dir', '{out}/nowhere'], 'nowhere: runs folder not found'),
    ('empty prompt file', ['--prompt_file', '{out}/../empty.txt'], 'empty.txt: the prompt file is empty'),
    ('no prompt file', ['--prompt_file', '{out}/none.txt'], 'none.txt: prompt file not found'),
    ('empty prompt', ['--prompt', '  '], '--prompt is empty'),
    ('negative temperature', ['--temperature', '-0.5'], '--temperature=-0.5: expected 0 (greedy) or a positive'),
    ('top_k 0', ['--top_k', '0'], '--top_k=0: expected at least 1'),
    ('no new tokens', ['--max_new_tokens', '0'], '--max_new_tokens=0: expected at least 1'),
    ('tokenizer changed', ['--run_name', 'bpe_changed'], '{out}/bpe_changed/tokenizer.json: sha256'),
    ('tokenizer missing', ['--run_name', 'bpe_missing'], '{out}/bpe_missing/tokenizer.json not found'),
    ('no such device', ['--device', 'cuda'], "device 'cuda': no CUDA device"),
]


@pytest.mark.parametrize('args, message', [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line(tiny_runs, capsys, args, message):
    if args == ['--device', 'cuda']:
        import torch
        if torch.cuda.is_available():
            pytest.skip('this machine has CUDA')
    argv = ['--runs_dir', str(tiny_runs), '--run_name', 'ok', '--device', 'cpu'] + \
        [a.replace('{out}', str(tiny_runs)) for a in args]
    with pytest.raises(SystemExit) as exc:
        sample.main(argv)
    text = str(exc.value.code)  # a string: Python prints it on stderr and exits with status 1
    assert text.startswith('sample.py: error: ') and '\n' not in text
    assert message.replace('{out}', str(tiny_runs)) in text
    assert '--- prompt' not in capsys.readouterr().out  # no story was printed

def test_stories_continue_past_the_context(tiny_runs, capsys):
    """The default --max_new_tokens (200) on a block_size-64 model: three contexts' worth of story."""
    sample.main(['--runs_dir', str(tiny_runs), '--run_name', 'ok', '--device', 'cpu', '--temperature', '1',
                 '--max_new_tokens', '200'])
    out = capsys.readouterr().out
    assert '--- prompt 1, sample 1 ---' in out and len(out.split('---')[-1]) > 64

# -----------------------------------------------------------------------------
# the command line


def test_command_line(smoke_runs):
    proc = run_script(REPO / 'sample.py', '--out_dir', smoke_runs, '--run_name', 'baseline_s2', '--prompt',
                      PROMPTS[0], '--temperature', '0', '--max_new_tokens', '12', '--num_samples', '2',
                      '--device', 'cpu', timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith('baseline_s2 at step 30, bpe4k tokenizer, greedy, device cpu\n')
    expected = sample.generate_stories(smoke_runs / 'baseline_s2', PROMPTS[:1], max_new_tokens=12, temperature=0)
    assert printed_stories(proc.stdout) == [PROMPTS[0] + expected[0]] * 2
